"""Early stopping with learning-rate decay on plateaus: the epoch-level driver of ``train_model``.

This is the control flow of neuralpredictors' ``early_stopping`` generator together with the
per-epoch part of the course trainer (``lviv.trainers.train_model`` / sensorium's
``standard_trainer``) and PyTorch's ``ReduceLROnPlateau``, written as plain Python around five
callables, so it knows nothing about tensors:

    objective()        -> validation score (mean correlation); evaluates in eval mode itself
    train_epoch(epoch) -> trains one epoch (the caller draws its own progress bar)
    get_state()        -> a copy of the parameters and buffers (BatchNorm running stats)
    set_state(state)   -> loads such a copy back (the optimizer's moments are left alone)
    set_lr(lr)         -> sets the optimizer's learning rate

Sequence (identical to the reference, printed lines included)::

    best = current = objective(); best_state = get_state()
    for round in range(lr_decay_steps):
        counter = 0
        while counter < patience and epoch < max_iter:
            repeat `interval` times:
                epoch += 1
                tracker logs (and, if verbose, prints "name value" for each tracked value)
                if current is not finite: print "Objective is not Finite. Stopping training",
                                          restore as at the end, stop
                cb(); train_epoch(epoch)
            current = objective()
            scheduler.step(current)          # may print "Epoch    12: reducing learning ..."
            if current beats best by more than tolerance:
                print "[{epoch:03d}|{counter:02d}/{patience:02d}] ---> {current}"  (counter before reset)
                best_state = get_state(); best = current; counter = 0
            else:
                counter += 1
                print "[{epoch:03d}|{counter:02d}/{patience:02d}] -/-> {current}"
        if epoch < max_iter and lr_decay_steps > 1:
            old = objective(); set_state(best_state)
            print "Restoring best model after lr decay! {old:.6f} ---> {objective():.6f}"
    old = objective(); set_state(best_state)
    print "Restoring best model! {old:.6f} ---> {objective():.6f}"

Differences from the reference, all outside that sequence:
* A ``FloatingPointError`` raised by ``train_epoch`` (``train_model`` raises it for a non-finite
  training loss) stops training like a non-finite objective (``stop_reason == 'not_finite'``),
  restoring the best state when its objective is finite.
* A ``KeyboardInterrupt`` raised while training or evaluating is caught: the best state is
  restored (with ``restore_best``), a line says so, and the record of what was reached is
  returned (``stop_reason == 'interrupted'``) instead of the exception propagating.
* With ``restore_best=False`` the reference still evaluates the objective once before each
  (skipped) restore after a decay round; that evaluation is skipped here (it has no effect).
* The value printed in ``--->``/``-/->`` lines is ``str.format`` of what ``objective`` returned,
  as in the reference (a NumPy float32 mean prints with float64 digits, e.g.
  ``0.05955984443426132``); the ``Restoring`` lines use 6 decimals.
"""

import numpy as np

from .optim.lr_scheduler import ReduceLROnPlateau as _OptimPlateau  # noqa: E402

__all__ = ["ReduceLROnPlateau", "EarlyStoppingRecord", "early_stopping_loop"]


class _LRGroup(dict):
    """One optimizer parameter group whose lr changes are forwarded to a callback."""

    def __init__(self, lr, set_lr):
        super().__init__(lr=float(lr))
        self._set_lr = set_lr

    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        if key == "lr" and self._set_lr is not None:
            self._set_lr(value)


class _LRHolder:
    def __init__(self, lr, set_lr):
        self.param_groups = [_LRGroup(lr, set_lr)]


class ReduceLROnPlateau(_OptimPlateau):
    """PyTorch's ``ReduceLROnPlateau`` (lviv_c.optim.lr_scheduler's) for one learning rate held
    outside an optimizer: ``set_lr`` is called with each new rate, ``print`` gets the verbose
    ``Epoch {last_epoch:5d}: reducing learning rate of group 0 to {lr:.4e}.`` lines, and
    ``step(metric)`` returns the new rate when it was reduced, else None."""

    def __init__(self, lr, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0.0, eps=1e-8, verbose=False,
                 set_lr=None, print=print):
        self._holder = _LRHolder(lr, set_lr)
        super().__init__(self._holder, mode=mode, factor=factor, patience=patience,
                         threshold=threshold, threshold_mode=threshold_mode, cooldown=cooldown,
                         min_lr=min_lr, eps=eps, verbose=verbose)
        self._print = print

    @property
    def lr(self):
        return float(self._holder.param_groups[0]["lr"])

    def step(self, metric):
        old = self.lr
        super().step(metric)
        return self.lr if self.lr != old else None


class EarlyStoppingRecord:
    """What ``early_stopping_loop`` reached.

    Attributes: ``epoch`` (the epoch counter at the end, as the reference counts it: it is
    incremented before the finiteness check), ``epochs_trained`` (calls of ``train_epoch``
    that returned), ``best_objective``, ``best_epoch`` (0 = the initial state),
    ``objectives`` [(epoch, value)] (every evaluation after a training interval), ``lr``
    (learning rate of each trained epoch), ``lr_changes`` [(epoch, new_lr)], ``restores``
    [(kind, epoch, old, new)] with kind 'lr_decay' | 'final' | 'interrupted',
    ``tracker`` {name: [values]} (dict trackers), ``stop_reason`` 'patience' | 'max_iter' |
    'not_finite' | 'interrupted', ``lines`` (everything printed).
    """

    def __init__(self):
        self.epoch = 0
        self.epochs_trained = 0
        self.best_objective = None
        self.best_epoch = 0
        self.objectives = []
        self.lr = []
        self.lr_changes = []
        self.restores = []
        self.tracker = {}
        self.stop_reason = None
        self.lines = []

    def __repr__(self):
        return ("EarlyStoppingRecord(epoch={}, epochs_trained={}, best_objective={}, best_epoch={}, "
                "stop_reason={!r}, final_lr={})".format(
                    self.epoch, self.epochs_trained, self.best_objective, self.best_epoch,
                    self.stop_reason, self.lr[-1] if self.lr else None))


def _finite(x):
    return bool(np.all(np.isfinite(np.asarray(x, dtype=np.float64))))


def early_stopping_loop(objective, train_epoch, get_state, set_state, set_lr=None, lr_init=0.005,
                        interval=1, patience=5, epoch=0, max_iter=200, maximize=True,
                        tolerance=1e-6, restore_best=True, lr_decay_steps=3, lr_decay_factor=0.3,
                        min_lr=1e-4, verbose=True, print=print, tracker=None, cb=None,
                        scheduler=True):
    """Train with early stopping and reduce-on-plateau LR decay (see the module docstring).

    ``tracker``: None; a dict ``{name: callable}`` evaluated at the start of every epoch (before
    training, i.e. on the state the previous evaluation saw), recorded in ``record.tracker`` and,
    with ``verbose``, printed as ``name value``; or a neuralpredictors-style object with
    ``log_objective(current)`` (and ``log`` dict, printed the same way). ``scheduler``: True
    for the reference ``ReduceLROnPlateau`` (max/min mode from ``maximize``, ``factor =
    lr_decay_factor``, ``patience``, absolute ``threshold = tolerance``, ``min_lr``, verbose
    messages with ``verbose``), False for none, or an object with ``step(metric)``.
    ``print`` receives every line (pass a collector or a no-op to redirect / silence).

    Returns an ``EarlyStoppingRecord``.
    """
    rec = EarlyStoppingRecord()

    def say(line):
        rec.lines.append(line)
        print(line, flush=True) if print is _builtin_print else print(line)

    lr = float(lr_init)

    def apply_lr(new_lr):
        nonlocal lr
        lr = float(new_lr)
        if set_lr is not None:
            set_lr(lr)

    if scheduler is True:
        sched = ReduceLROnPlateau(lr, mode="max" if maximize else "min", factor=lr_decay_factor,
                                  patience=patience, threshold=tolerance, threshold_mode="abs",
                                  min_lr=min_lr, verbose=verbose, set_lr=apply_lr, print=say)
    elif scheduler:
        sched = scheduler
    else:
        sched = None
    if set_lr is not None:
        set_lr(lr)

    sign = -1.0 if maximize else 1.0

    def log_tracker(current):
        if tracker is None:
            return
        if isinstance(tracker, dict):
            values = {name: fn() for name, fn in tracker.items()}
            for name, value in values.items():
                rec.tracker.setdefault(name, []).append(value)
        else:
            tracker.log_objective(current)
            values = {k: v[-1] for k, v in getattr(tracker, "log", {}).items() if len(v)}
        if verbose:
            for name, value in values.items():
                say("{} {}".format(name, str(value)))  # print(key, value) in the reference

    def restore(kind, message):
        old = objective()
        set_state(best_state)
        new = objective()
        say("{} {:.6f} ---> {:.6f}".format(message, old, new))
        rec.restores.append((kind, epoch, old, new))

    def finalize():
        if restore_best:
            restore("final", "Restoring best model!")
        else:
            say("Final best model! objective {:.6f}".format(objective()))

    best_objective = current = objective()
    best_state = get_state()
    rec.best_objective, rec.best_epoch = best_objective, epoch
    rec.stop_reason = "patience"
    try:
        for repeat in range(lr_decay_steps):
            patience_counter = 0
            while patience_counter < patience and epoch < max_iter:
                for _ in range(interval):
                    epoch += 1
                    rec.epoch = epoch
                    log_tracker(current)
                    if not _finite(current):
                        say("Objective is not Finite. Stopping training")
                        rec.stop_reason = "not_finite"
                        finalize()
                        return rec
                    if cb is not None:
                        cb()
                    rec.lr.append(lr)
                    train_epoch(epoch)
                    rec.epochs_trained += 1

                current = objective()
                rec.objectives.append((epoch, current))
                if sched is not None:
                    lr_before = lr
                    sched.step(current)
                    if lr != lr_before:
                        rec.lr_changes.append((epoch, lr))

                if current * sign < best_objective * sign - tolerance:
                    say("[{:03d}|{:02d}/{:02d}] ---> {}".format(epoch, patience_counter, patience,
                                                                current))
                    best_state = get_state()
                    best_objective = current
                    rec.best_objective, rec.best_epoch = current, epoch
                    patience_counter = 0
                else:
                    patience_counter += 1
                    say("[{:03d}|{:02d}/{:02d}] -/-> {}".format(epoch, patience_counter, patience,
                                                                current))

            if epoch < max_iter and lr_decay_steps > 1 and restore_best:
                restore("lr_decay", "Restoring best model after lr decay!")
        if epoch >= max_iter and rec.stop_reason == "patience":
            rec.stop_reason = "max_iter" if patience_counter < patience else "patience"
        finalize()
    except FloatingPointError as e:
        # train_epoch found a non-finite loss: stop as for a non-finite objective, restoring the
        # best state when it is finite (never a NaN state over a good one)
        rec.stop_reason = "not_finite"
        say("{} Stopping training".format(str(e).rstrip(".") + "."))
        if restore_best and _finite(best_objective):
            set_state(best_state)
            say("Restored the best model (objective {:.6f}, epoch {}).".format(
                float(best_objective), rec.best_epoch))
            rec.restores.append(("not_finite", epoch, None, best_objective))
    except KeyboardInterrupt:
        rec.stop_reason = "interrupted"
        if restore_best:
            set_state(best_state)
            say("Training interrupted at epoch {}: restored the best model (objective {:.6f}, "
                "epoch {}).".format(epoch, float(best_objective), rec.best_epoch))
            rec.restores.append(("interrupted", epoch, None, best_objective))
        else:
            say("Training interrupted at epoch {}: keeping the current model.".format(epoch))
    return rec


_builtin_print = print
