"""lviv_c.training_loop driven by scripted validation scores.

The "model" is a dict whose score is set by each training epoch from a script; get_state /
set_state copy it, so restores are visible in later evaluations exactly as with real weights.
"""
import numpy as np
import pytest

from lviv_c.training_loop import ReduceLROnPlateau, early_stopping_loop


class Scripted:
    def __init__(self, initial, scores, interrupt_at=None):
        self.state = {"score": initial, "trained": 0}
        self.scores = scores            # epoch -> score after training that epoch
        self.interrupt_at = interrupt_at
        self.lines = []
        self.lrs = []
        self.trained_epochs = []
        self.n_eval = 0

    def objective(self):
        self.n_eval += 1
        return self.state["score"]

    def train_epoch(self, epoch):
        if epoch == self.interrupt_at:
            self.state["score"] = np.float32(-1.0)  # half-trained garbage
            raise KeyboardInterrupt
        self.trained_epochs.append(epoch)
        self.state = {"score": self.scores[epoch], "trained": self.state["trained"] + 1}

    def get_state(self):
        return dict(self.state)

    def set_state(self, s):
        self.state = dict(s)

    def set_lr(self, lr):
        self.lrs.append(lr)

    def run(self, **kw):
        kw.setdefault("print", self.lines.append)
        return early_stopping_loop(self.objective, self.train_epoch, self.get_state,
                                   self.set_state, self.set_lr, **kw)


# The LN run of the course notebook: validation correlation after each epoch (float32 values).
NOTEBOOK_INITIAL = np.float32(-0.0019075753)
NOTEBOOK_SCORES = {i + 1: np.float32(v) for i, v in enumerate([
    0.05955984443426132, 0.06592471897602081, 0.06381010264158249, 0.07152469456195831,
    0.07718321681022644, 0.07769027352333069, 0.07006139308214188, 0.06875057518482208,
    0.06966907531023026, 0.0717167928814888, 0.07496411353349686, 0.07143863290548325,
    0.10395169258117676, 0.10067544877529144, 0.10142096132040024, 0.10160883516073227,
    0.09739978611469269, 0.09415452182292938, 0.09806245565414429, 0.11151435226202011,
    0.10864903032779694, 0.10798943787813187, 0.10652267187833786, 0.10494276136159897,
    0.1067856028676033])}

# Its printed log, progress bars and the poisson_loss tracker lines left out.
NOTEBOOK_LOG = """\
correlation -0.0019075753
[001|00/05] ---> 0.05955984443426132
correlation 0.059559844
[002|00/05] ---> 0.06592471897602081
correlation 0.06592472
[003|01/05] -/-> 0.06381010264158249
correlation 0.0638101
[004|01/05] ---> 0.07152469456195831
correlation 0.071524695
[005|00/05] ---> 0.07718321681022644
correlation 0.07718322
[006|00/05] ---> 0.07769027352333069
correlation 0.07769027
[007|01/05] -/-> 0.07006139308214188
correlation 0.07006139
[008|02/05] -/-> 0.06875057518482208
correlation 0.068750575
[009|03/05] -/-> 0.06966907531023026
correlation 0.069669075
[010|04/05] -/-> 0.0717167928814888
correlation 0.07171679
[011|05/05] -/-> 0.07496411353349686
Restoring best model after lr decay! 0.074964 ---> 0.077690
correlation 0.07769027
Epoch    12: reducing learning rate of group 0 to 1.5000e-03.
[012|01/05] -/-> 0.07143863290548325
correlation 0.07143863
[013|01/05] ---> 0.10395169258117676
correlation 0.10395169
[014|01/05] -/-> 0.10067544877529144
correlation 0.10067545
[015|02/05] -/-> 0.10142096132040024
correlation 0.10142096
[016|03/05] -/-> 0.10160883516073227
correlation 0.101608835
[017|04/05] -/-> 0.09739978611469269
correlation 0.097399786
[018|05/05] -/-> 0.09415452182292938
Restoring best model after lr decay! 0.094155 ---> 0.103952
correlation 0.10395169
Epoch    19: reducing learning rate of group 0 to 4.5000e-04.
[019|01/05] -/-> 0.09806245565414429
correlation 0.098062456
[020|01/05] ---> 0.11151435226202011
correlation 0.11151435
[021|01/05] -/-> 0.10864903032779694
correlation 0.10864903
[022|02/05] -/-> 0.10798943787813187
correlation 0.10798944
[023|03/05] -/-> 0.10652267187833786
correlation 0.10652267
[024|04/05] -/-> 0.10494276136159897
correlation 0.10494276
[025|05/05] -/-> 0.1067856028676033
Restoring best model after lr decay! 0.106786 ---> 0.111514
Restoring best model! 0.111514 ---> 0.111514"""


def test_reproduces_the_course_notebook_log():
    s = Scripted(NOTEBOOK_INITIAL, NOTEBOOK_SCORES)
    rec = s.run(tracker={"correlation": s.objective})
    assert "\n".join(s.lines) == NOTEBOOK_LOG
    assert rec.lines == s.lines
    assert rec.epoch == 25 and rec.epochs_trained == 25 and s.trained_epochs == list(range(1, 26))
    assert rec.stop_reason == "patience"
    assert rec.best_epoch == 20 and rec.best_objective == NOTEBOOK_SCORES[20]
    assert s.state["score"] == NOTEBOOK_SCORES[20]          # best state restored at the end
    # learning rates: set once at start, then the two reductions (Python float arithmetic)
    assert s.lrs == [0.005, 0.005 * 0.3, 0.005 * 0.3 * 0.3]
    assert rec.lr_changes == [(12, 0.005 * 0.3), (19, 0.005 * 0.3 * 0.3)]
    assert rec.lr == [0.005] * 12 + [0.0015] * 7 + [0.005 * 0.3 * 0.3] * 6
    assert [r[:2] for r in rec.restores] == [("lr_decay", 11), ("lr_decay", 18), ("lr_decay", 25),
                                             ("final", 25)]
    assert len(rec.tracker["correlation"]) == 25
    assert rec.tracker["correlation"][11] == NOTEBOOK_SCORES[6]  # epoch 12 starts from the restore


def test_verbose_false_drops_tracker_and_scheduler_lines_only():
    s = Scripted(NOTEBOOK_INITIAL, NOTEBOOK_SCORES)
    s.run(tracker={"correlation": s.objective}, verbose=False)
    expect = [l for l in NOTEBOOK_LOG.split("\n")
              if not l.startswith("correlation") and not l.startswith("Epoch ")]
    assert s.lines == expect


def test_max_iter_stops_without_decay_restore():
    s = Scripted(0.0, {e: 0.01 * e for e in range(1, 100)})   # always improving
    rec = s.run(max_iter=7)
    assert rec.epoch == 7 and rec.epochs_trained == 7 and rec.stop_reason == "max_iter"
    # epoch == max_iter: no "after lr decay" restore, only the final one
    assert [l for l in s.lines if l.startswith("Restoring")] == [
        "Restoring best model! 0.070000 ---> 0.070000"]
    assert s.lines[0] == "[001|00/05] ---> 0.01"
    assert s.lrs == [0.005]


def test_patience_rounds_and_single_decay_step():
    # improves twice, then never again: with lr_decay_steps=1 there is one round of patience 3
    scores = {1: 0.2, 2: 0.3}
    scores.update({e: 0.1 for e in range(3, 50)})
    s = Scripted(0.0, scores)
    rec = s.run(patience=3, lr_decay_steps=1)
    assert rec.epoch == 5 and rec.stop_reason == "patience"
    assert s.lines == ["[001|00/03] ---> 0.2", "[002|00/03] ---> 0.3", "[003|01/03] -/-> 0.1",
                       "[004|02/03] -/-> 0.1", "[005|03/03] -/-> 0.1",
                       "Restoring best model! 0.100000 ---> 0.300000"]
    # three rounds of patience 3: 5 + 3 + 3 epochs, restores after each round, scheduler
    # (patience 3: reduces on the 4th bad step) fires at epochs 6 and 10
    s = Scripted(0.0, scores)
    rec = s.run(patience=3, lr_decay_steps=3, verbose=False)
    assert rec.epoch == 11
    assert [r[:2] for r in rec.restores] == [("lr_decay", 5), ("lr_decay", 8), ("lr_decay", 11),
                                             ("final", 11)]
    assert rec.lr_changes == [(6, 0.005 * 0.3), (10, 0.005 * 0.3 * 0.3)]


def test_tolerance_is_strict_and_absolute():
    scores = {1: 0.5 + 1e-6, 2: 0.5 + 1.5e-6, 3: 0.5 + 3e-6}
    s = Scripted(0.5, scores)
    rec = s.run(max_iter=3, lr_decay_steps=1)
    # +1e-6 is not more than tolerance 1e-6; +1.5e-6 is; +3e-6 beats 0.5+1.5e-6 by exactly 1.5e-6
    assert [l[:11] for l in s.lines[:3]] == ["[001|01/05]", "[002|01/05]", "[003|00/05]"]
    assert rec.best_epoch == 3


def test_minimize_and_interval():
    scores = {e: 10.0 - e if e <= 4 else 20.0 for e in range(1, 40)}
    s = Scripted(10.0, scores)
    rec = s.run(maximize=False, interval=2, patience=2, lr_decay_steps=1, max_iter=100)
    # evaluations every 2 epochs: 2 (8.0, better), 4 (6.0, better), 6, 8 (worse) -> stop
    assert [e for e, _ in rec.objectives] == [2, 4, 6, 8]
    assert s.lines[:4] == ["[002|00/02] ---> 8.0", "[004|00/02] ---> 6.0", "[006|01/02] -/-> 20.0",
                           "[008|02/02] -/-> 20.0"]
    assert s.state["score"] == 6.0 and rec.epochs_trained == 8


def test_non_finite_objective_stops():
    scores = {1: 0.2, 2: float("nan"), 3: 0.9}
    s = Scripted(0.0, scores)
    rec = s.run()
    assert s.trained_epochs == [1, 2]
    assert rec.stop_reason == "not_finite" and rec.epoch == 3 and rec.epochs_trained == 2
    assert s.lines == ["[001|00/05] ---> 0.2", "[002|01/05] -/-> nan",
                       "Objective is not Finite. Stopping training",
                       "Restoring best model! nan ---> 0.200000"]
    assert s.state["score"] == 0.2


def test_keyboard_interrupt_restores_best():
    scores = {1: 0.2, 2: 0.3, 3: 0.25}
    s = Scripted(0.0, scores, interrupt_at=4)
    rec = s.run()
    assert rec.stop_reason == "interrupted" and rec.epoch == 4 and rec.epochs_trained == 3
    assert s.state["score"] == 0.3
    assert s.lines[-1] == ("Training interrupted at epoch 4: restored the best model "
                           "(objective 0.300000, epoch 2).")


def test_restore_best_false():
    scores = {1: 0.2, 2: 0.1, 3: 0.1}
    s = Scripted(0.0, scores)
    rec = s.run(patience=2, lr_decay_steps=2, restore_best=False, max_iter=3)
    assert s.state["score"] == 0.1
    assert s.lines[-1] == "Final best model! objective 0.100000"
    assert not any(l.startswith("Restoring") for l in s.lines)


def test_cb_and_state_copies():
    calls = []
    s = Scripted(0.0, {e: 0.1 * e for e in range(1, 10)})
    s.run(max_iter=3, cb=lambda: calls.append(s.state["trained"]))
    assert calls == [0, 1, 2]  # before each epoch's training


def test_reduce_lr_on_plateau_matches_torch_rules():
    out = []
    sch = ReduceLROnPlateau(1.0, mode="max", factor=0.5, patience=2, threshold=0.1,
                            threshold_mode="abs", min_lr=0.2, verbose=True, print=out.append)
    # best 1.0; 1.05 is not better than 1.0 + 0.1 -> bad
    for m in [1.0, 1.05, 1.05, 1.05]:
        sch.step(m)
    assert sch.lr == 0.5 and out == ["Epoch     4: reducing learning rate of group 0 to 5.0000e-01."]
    assert sch.num_bad_epochs == 0
    for m in [0.0, 0.0, 0.0]:
        sch.step(m)
    assert sch.lr == 0.25
    for m in [0.0, 0.0, 0.0]:
        sch.step(m)
    assert sch.lr == 0.2          # floored at min_lr
    for m in [0.0, 0.0, 0.0]:
        sch.step(m)
    assert sch.lr == 0.2 and len(out) == 3  # no reduction below min_lr, no message
    # rel mode, min mode, cooldown
    sch = ReduceLROnPlateau(1.0, mode="min", factor=0.1, patience=0, threshold=0.1,
                            threshold_mode="rel", cooldown=2)
    sch.step(10.0)                # better than inf
    sch.step(9.5)                 # not < 10 * 0.9 -> bad -> reduce, cooldown 2
    assert sch.lr == pytest.approx(0.1)
    sch.step(100.0)               # bad but in cooldown
    sch.step(100.0)               # bad but in cooldown
    assert sch.lr == pytest.approx(0.1)
    sch.step(100.0)
    assert sch.lr == pytest.approx(0.01)
    with pytest.raises(ValueError):
        ReduceLROnPlateau(1.0, factor=1.0)


# ----------------------------------------------------------------------------- progress bar

def test_progress_fallback_and_tqdm():
    import io
    import re
    from lviv_c.progress import SimpleBar, format_bar, progress

    buf = io.StringIO()
    bar = progress(150, "Epoch 4", file=buf, use_tqdm=False)
    assert isinstance(bar, SimpleBar)
    for _ in range(150):
        bar.update()
    bar.close()
    bar.close()  # idempotent
    assert re.fullmatch(r"Epoch 4: 100%\|#{10}\| 150/150 \[00:00<00:00, [0-9.]+it/s\]\n",
                        buf.getvalue())
    assert format_bar(75, 150, 30.0, "Epoch 1") == "Epoch 1:  50%|#####     | 75/150 [00:30<00:30, 2.50it/s]"
    assert format_bar(3, None, 0.0) == "3 [00:00, ?it/s]"
    buf = io.StringIO()
    assert list(progress(desc="x", iterable=range(4), file=buf, use_tqdm=False)) == [0, 1, 2, 3]
    assert buf.getvalue().startswith("x: 100%|##########| 4/4 [")
    buf = io.StringIO()
    with progress(10, "quiet", disable=True, file=buf, use_tqdm=False) as b:
        b.update(10)
    assert buf.getvalue() == ""
    tqdm = pytest.importorskip("tqdm")
    buf = io.StringIO()
    with progress(5, "Epoch 2", file=buf) as b:
        assert isinstance(b, tqdm.tqdm)
        b.update(5)
    assert "Epoch 2: 100%" in buf.getvalue() and "5/5" in buf.getvalue()


def test_reduce_lr_on_plateau_agrees_with_pytorch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for mode, thr_mode, cooldown in [("max", "abs", 0), ("min", "rel", 0), ("max", "rel", 2),
                                     ("min", "abs", 1)]:
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.005)
        ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode=mode, factor=0.3, patience=3, threshold=1e-3, threshold_mode=thr_mode,
            cooldown=cooldown, min_lr=1e-4)
        ours = ReduceLROnPlateau(0.005, mode=mode, factor=0.3, patience=3, threshold=1e-3,
                                 threshold_mode=thr_mode, cooldown=cooldown, min_lr=1e-4)
        walk = np.cumsum(rng.normal(scale=0.01, size=300)) + 1.0
        for m in walk:
            ref.step(float(m))
            ours.step(float(m))
            assert ours.lr == opt.param_groups[0]["lr"]
            assert ours.num_bad_epochs == ref.num_bad_epochs


def test_object_tracker_and_no_scheduler():
    class Tracker:  # neuralpredictors' MultipleObjectiveTracker interface
        def __init__(self, fn):
            self.fn, self.log = fn, {"correlation": []}

        def log_objective(self, obj=None):
            self.log["correlation"].append(self.fn())

    scores = {1: 0.2, 2: 0.1, 3: 0.1}
    s = Scripted(0.0, scores)
    tr = Tracker(s.objective)
    rec = s.run(tracker=tr, scheduler=False, patience=2, lr_decay_steps=1)
    assert tr.log["correlation"] == [0.0, 0.2, 0.1]
    assert s.lines[0] == "correlation 0.0" and s.lines[1] == "[001|00/02] ---> 0.2"
    assert rec.lr == [0.005] * 3 and rec.lr_changes == [] and rec.tracker == {}
