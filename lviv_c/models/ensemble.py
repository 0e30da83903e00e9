"""Ensembles: the average of several trained models' predictions (e.g. the five best seeds of a
sweep, the field's standard for the best predictions and for MEIs that do not exploit one model's
quirks)."""
from .. import nn

__all__ = ["Ensemble"]


def _accepts_data_key(model):
    from ..utility.measures import _accepts_data_key as accepts
    return accepts(model)


class Ensemble(nn.Module):
    """``Ensemble(models)``: rate = mean over the members of ``member(x)``.

    A module like any model: measures (``lviv_c.utility.measures``), ``train_model`` (its
    evaluation; training an ensemble trains its members jointly on the averaged prediction),
    ``gradient_rf``, ``generate_mei`` and ``cross_activation`` see one model. ``data_key`` (and
    any other keyword) goes to the members that take it. ``state_dict()`` holds every member's
    entries under ``members.<i>.``; ``load_state_dict`` restores them into members built the
    same way. ``regularizer()`` is the members' mean, so the ensemble's loss has the scale of one
    member's."""

    def __init__(self, models):
        super().__init__()
        models = list(models)
        if not models:
            raise ValueError("Ensemble: expected at least one model, got none")
        for i, m in enumerate(models):
            if not callable(m) or not hasattr(m, "parameters"):
                raise TypeError(f"Ensemble: member {i} is a {type(m).__name__}, not a model "
                                "(an lviv_c.nn.Module)")
        self.members = nn.ModuleList(models)
        self._takes_key = [_accepts_data_key(m) for m in models]

    def __len__(self):
        return len(self.members)

    def __getitem__(self, i):
        return self.members[i]

    def forward(self, x, data_key=None, **kwargs):
        out = None
        for m, takes_key in zip(self.members, self._takes_key):
            if takes_key:
                y = m(x, data_key=data_key, **kwargs) if data_key is not None else m(x, **kwargs)
            else:
                y = m(x)
            out = y if out is None else out + y
        return out if len(self.members) == 1 else out * (1.0 / len(self.members))

    def regularizer(self, data_key=None):
        total = None
        n = 0
        for m, takes_key in zip(self.members, self._takes_key):
            reg = getattr(m, "regularizer", None)
            if reg is None:
                continue
            r = reg(data_key) if (takes_key and data_key is not None) else reg()
            total = r if total is None else total + r
            n += 1
        if total is None:
            return 0.0
        return total if n == 1 else total * (1.0 / n)
