"""torch.optim for lviv_c: Adam and SGD with PyTorch's update formulas. The update of all
parameters of a step is one C call (csrc/optim.c); param_groups are plain dicts, so changing
group['lr'] takes effect at the next step."""
import copy
from collections import defaultdict

import numpy as np

from .. import _C
from ..tensor import Tensor, zeros
from . import lr_scheduler  # noqa: F401

__all__ = ["Optimizer", "Adam", "SGD", "lr_scheduler"]


class _Required:
    def __repr__(self):
        return "<required parameter>"


required = _Required()


class Optimizer:
    """Base class: param_groups (list of dicts with 'params' and the hyper-parameters), state
    (per parameter), zero_grad, state_dict / load_state_dict."""

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            "but got a Tensor")
        groups = list(params)
        if len(groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for g in groups:
            self.add_param_group(g)

    def add_param_group(self, param_group):
        if not isinstance(param_group, dict):
            raise TypeError("param group must be a dict")
        params = param_group["params"]
        if isinstance(params, Tensor):
            param_group["params"] = [params]
        elif isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the "
                            "ordering of tensors in sets will change between runs. Please use a list instead.")
        else:
            param_group["params"] = list(params)
        for p in param_group["params"]:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in param_group["params"]):
            raise ValueError("some parameters appear in more than one parameter group")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad.zero_()

    def _state_tensor(self, p):
        # optimizer state lives on the parameter's device
        return zeros(*p.shape, device="cuda") if p.is_cuda else zeros(*p.shape)

    @staticmethod
    def _follow(st, p):
        """The state tensors of p moved to p's device when the model moved after they were made
        (model.to(...) after some steps): the moments follow the parameters, once."""
        for k, v in st.items():
            if isinstance(v, Tensor) and v.is_cuda != p.is_cuda:
                st[k] = _C._to_device(v, 1 if p.is_cuda else 0)

    # ------------------------------------------------------------ state dict
    def state_dict(self):
        """{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]} like torch;
        state tensors are copies."""
        index = {}
        groups = []
        start = 0
        for g in self.param_groups:
            packed = {k: v for k, v in g.items() if k != "params"}
            ids = list(range(start, start + len(g["params"])))
            for i, p in zip(ids, g["params"]):
                index[id(p)] = i
            packed["params"] = ids
            start += len(ids)
            groups.append(packed)
        state = {}
        for g in self.param_groups:
            for p in g["params"]:
                if p in self.state and self.state[p]:
                    state[index[id(p)]] = {k: (v.clone() if isinstance(v, Tensor) else copy.deepcopy(v))
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        groups = self.param_groups
        saved = state_dict["param_groups"]
        if len(groups) != len(saved):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(g["params"]) != len(s["params"]) for g, s in zip(groups, saved)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
        idmap = {}
        for g, s in zip(groups, saved):
            for i, p in zip(s["params"], g["params"]):
                idmap[i] = p
        self.state = defaultdict(dict)
        for k, v in state_dict["state"].items():
            k = int(k)
            if k not in idmap:
                continue
            p = idmap[k]
            st = {}
            for name, val in v.items():
                if isinstance(val, (Tensor, np.ndarray)) or (hasattr(val, "shape") and hasattr(val, "__array__")):
                    arr = np.asarray(val.detach().cpu() if isinstance(val, Tensor) else val)
                    if name == "step" or arr.ndim == 0:
                        st[name] = int(arr) if name == "step" else float(arr)
                    else:
                        if arr.shape != tuple(p.shape):
                            raise ValueError(f"optimizer state '{name}' has shape {arr.shape}, the parameter {tuple(p.shape)}")
                        st[name] = _C.from_numpy(np.ascontiguousarray(arr, dtype=np.float32).copy())
                        if p.is_cuda:
                            st[name] = _C._to_device(st[name], 1)
                else:
                    st[name] = int(val) if name == "step" else copy.deepcopy(val)
            self.state[p] = st
        for g, s in zip(groups, saved):
            for k, v in s.items():
                if k != "params":
                    g[k] = v

    def __repr__(self):
        s = self.__class__.__name__ + " ("
        for i, g in enumerate(self.param_groups):
            s += "\n"
            s += f"Parameter Group {i}\n"
            for key in sorted(g.keys()):
                if key != "params":
                    s += f"    {key}: {g[key]}\n"
        return s + ")"

    def step(self, closure=None):
        raise NotImplementedError


class Adam(Optimizer):
    """Adam (Kingma & Ba) with torch's formulas: L2 weight_decay added to the gradient,
    bias-corrected moments, optional amsgrad and maximize."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False,
                 *, maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad,
                        maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            from ..tensor import enable_grad
            with enable_grad():
                loss = closure()
        for g in self.param_groups:
            ps, ms, vs, vmax, steps = [], [], [], [], []
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["exp_avg"] = self._state_tensor(p)
                    st["exp_avg_sq"] = self._state_tensor(p)
                    if g["amsgrad"]:
                        st["max_exp_avg_sq"] = self._state_tensor(p)
                self._follow(st, p)
                st["step"] = int(st["step"]) + 1
                ps.append(p)
                ms.append(st["exp_avg"])
                vs.append(st["exp_avg_sq"])
                vmax.append(st.get("max_exp_avg_sq"))
                steps.append(st["step"])
            if not ps:
                continue
            b1, b2 = g["betas"]
            _C.nn_adam_step(ps, ms, vs, vmax if g["amsgrad"] else None, steps, float(g["lr"]), float(b1),
                         float(b2), float(g["eps"]), float(g["weight_decay"]), bool(g["amsgrad"]),
                         bool(g.get("maximize", False)))
        return loss


class SGD(Optimizer):
    """SGD with momentum, dampening, nesterov and L2 weight_decay (torch's formulas)."""

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        if lr is not required and lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize)
        super().__init__(params, defaults)

    def step(self, closure=None):
        loss = None
        if closure is not None:
            from ..tensor import enable_grad
            with enable_grad():
                loss = closure()
        for g in self.param_groups:
            ps, bufs, steps = [], [], []
            mom = float(g["momentum"])
            for p in g["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                first = 0
                self._follow(st, p)
                if mom != 0 and st.get("momentum_buffer") is None:
                    st["momentum_buffer"] = self._state_tensor(p)
                    first = 1
                ps.append(p)
                bufs.append(st.get("momentum_buffer") if mom != 0 else None)
                steps.append(first)
            if not ps:
                continue
            _C.nn_sgd_step(ps, bufs, steps, float(g["lr"]), mom, float(g["dampening"]),
                        float(g["weight_decay"]), bool(g["nesterov"]), bool(g.get("maximize", False)))
        return loss
