"""Regenerate the PyTorch fixtures of tests/test_serialization.py (needs PyTorch; not run by the
tests). Values follow simple formulas that the tests recompute.

    python tests/data/make_torch_fixtures.py
"""
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))


def state_dict():
    m = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.BatchNorm2d(2))
    with torch.no_grad():
        m[0].weight.copy_(torch.arange(18, dtype=torch.float32).reshape(2, 1, 3, 3) / 8 - 1)
        m[1].weight.copy_(torch.tensor([1.5, -0.5]))
        m[1].bias.copy_(torch.tensor([0.25, 0.125]))
        m[1].running_mean.copy_(torch.tensor([0.1, 0.2]))
        m[1].running_var.copy_(torch.tensor([2.0, 3.0]))
        m[1].num_batches_tracked.fill_(7)
    sd = m.state_dict()
    sd["extra.f64"] = torch.arange(4, dtype=torch.float64) * 0.1
    sd["extra.f16"] = torch.tensor([1.5, -2.25, 65504.0], dtype=torch.float16)
    sd["extra.bf16"] = torch.tensor([1.0, -3.5, 0.15625], dtype=torch.bfloat16)
    sd["extra.i32"] = torch.tensor([-7, 0, 2 ** 31 - 1], dtype=torch.int32)
    sd["extra.i16"] = torch.tensor([-300, 300], dtype=torch.int16)
    sd["extra.i8"] = torch.tensor([-128, 127], dtype=torch.int8)
    sd["extra.u8"] = torch.tensor([0, 200, 255], dtype=torch.uint8)
    sd["extra.bool"] = torch.tensor([True, False, True])
    sd["extra.big_i64"] = torch.tensor([-2 ** 40, 2 ** 62])
    sd["extra.scalar"] = torch.tensor(3.25)
    sd["extra.empty"] = torch.zeros(0, 3)
    return sd


def views():
    base = torch.arange(20, dtype=torch.float32).reshape(4, 5)
    return {"base": base, "t": base.t(), "slice": base[1:, ::2], "row": base[2],
            "expanded": torch.tensor([1.0, 2.0, 3.0]).expand(4, 3)}


if __name__ == "__main__":
    torch.save(state_dict(), os.path.join(HERE, "state_zip.pt"))
    torch.save(state_dict(), os.path.join(HERE, "state_legacy.pt"),
               _use_new_zipfile_serialization=False)
    torch.save(views(), os.path.join(HERE, "views_zip.pt"))
    torch.save(views(), os.path.join(HERE, "views_legacy.pt"), _use_new_zipfile_serialization=False)
    print("torch", torch.__version__)
