"""Robust encoders for use elsewhere: ``hrvlm export <run> OUT``.

Writes the fine-tuned run's weights as a checkpoint that plain open_clip loads::

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=OUT)

(``name`` is the run's model; hrvlm's tiny configs must be registered first with
``hrvlm.models.register_configs()``, open_clip's own ones need nothing).  The file holds the inner
open_clip model's state dict, nothing else: open_clip's loader reads ``.safetensors`` directly and
``.pt``/``.bin`` via ``torch.load``.  A JSON sidecar ``OUT.json`` says where it came from (run,
method, head spec, sha256), since a bare state dict carries no provenance.  The weights are the run's
file itself: the round trip gives the same image features (tested).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from . import runs
from .storage import atomic_write_bytes, atomic_write_json, file_sha256

FORMATS = (".safetensors", ".pt", ".bin")


def export(run: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Write run ``run``'s weights to ``out`` (suffix ``.safetensors``, ``.pt`` or ``.bin``); returns ``out``."""
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"{out}: the suffix must be one of {FORMATS} (open_clip picks its loader by it)")
    record = runs.read_record(run)
    weights = Path(record["path"]) / runs.WEIGHTS
    if out.suffix == ".safetensors":
        data = weights.read_bytes()
    else:
        import io

        import torch
        from safetensors.torch import load_file

        buf = io.BytesIO()
        torch.save(load_file(str(weights)), buf)
        data = buf.getvalue()
    atomic_write_bytes(out, data)
    atomic_write_json(out.with_name(out.name + ".json"), {
        "open_clip_model": record["model"], "run": record["path"], "method": record["method"],
        "head": record["head"], "pretrained": record["pretrained"], "sha256": file_sha256(out),
        "load": f"open_clip.create_model_and_transforms({record['model']!r}, pretrained={str(out)!r})"})
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", help="a finished run: its folder or name")
    parser.add_argument("out", help="checkpoint file to write (.safetensors, .pt or .bin)")


def run(args: argparse.Namespace) -> int:
    out = export(args.run, args.out)  # errors (no such run, bad suffix) are printed in one line by hrvlm.cli
    model = runs.read_record(args.run, verify=False)["model"]
    print(f"wrote {out}; load it with open_clip.create_model_and_transforms({model!r}, pretrained={str(out)!r})")
    return 0
