"""Robust encoders for use elsewhere: ``hrvlm export <run> OUT``.

Writes the fine-tuned run's weights as a checkpoint that open_clip loads::

    model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=OUT)

**What plain open_clip can and cannot build.**  ``name`` is the run's model.  open_clip's own configs
(``ViT-B-32-quickgelu``, ...) need nothing else.  hrvlm's mini-world configs (``hrvlm-tiny``,
``hrvlm-tiny-cnn``) are not open_clip's, and ``hrvlm-tiny-cnn``'s image tower is hrvlm code registered with
timm, so these need ``import hrvlm.models.clip; hrvlm.models.clip.register_configs()`` first: no JSON file alone
makes open_clip build them.  The printed load line and the sidecar say which applies.

**What the file holds.**  The inner open_clip model's state dict, nothing else (open_clip's loader
reads ``.safetensors`` directly and ``.pt``/``.bin`` via ``torch.load``); the weights are the run's
file itself, so the round trip gives the same image features (tested).  open_clip classifies with
cosine logits, ``scale · cos(image, class)``.  A run whose method deploys another head (HRVLM's
Poincaré distance logits, ``−d_c(exp₀(α·f), p_k)/τ``) is therefore refused unless ``drop_head=True``
(``--drop-head``) acknowledges that the head is dropped; then the top-1 agreement of the two heads is
measured (:func:`head_agreement`) and printed, and kept in the sidecar.  A JSON sidecar ``OUT.json``
says where the file came from (run, method, head spec, sha256, how to load it), since a bare state
dict carries no provenance.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from hrvlm.models import runs
from hrvlm.core.storage import atomic_write_bytes, atomic_write_json, check_writable_folder, file_sha256

FORMATS = (".safetensors", ".pt", ".bin")
AGREEMENT_N = 256  # images on which a dropped head's top-1 agreement is measured by default


def load_line(model: str, out: Path) -> str:
    """The Python that builds the exported model (hrvlm's own configs need registering first)."""
    from hrvlm.models.clip import CONFIG_DIR

    create = f"open_clip.create_model_and_transforms({model!r}, pretrained={str(out)!r})"
    if (CONFIG_DIR / f"{model}.json").is_file():
        return f"import hrvlm.models.clip; hrvlm.models.clip.register_configs(); {create}"
    return create


def head_agreement(record: dict, n: int = AGREEMENT_N, root: str | None = None, device=None) -> dict:
    """How often cosine logits (open_clip's) pick the same top-1 class as the run's own head.

    On the first ``n`` images of the fixed subset (:func:`hrvlm.data.fixed_subset`) of the evaluation
    split of the run's fine-tuning set, clean, leaf level, templates of the dataset: agreement =
    (1/n) Σᵢ [argmax cosine(xᵢ) = argmax head(xᵢ)].  A missing real dataset fails (one line) before
    the model loads.
    """
    import torch

    from hrvlm.data.real import DEFAULT_RESOLUTION, DatasetMissing, apply_resolution
    from hrvlm.data.registry import fixed_subset
    from hrvlm.core.environment import default_device
    from hrvlm.data.registry import get_dataset
    from hrvlm.evaluation.evaluate import EvalRequest
    from hrvlm.heads import build_head
    from hrvlm.models.clip import load_clip
    from hrvlm.data.templates import load_templates

    dataset = record["config"]["dataset"]
    options = {**(record["config"].get("dataset_options") or {}), **({"root": root} if root else {})}
    try:
        spec, split, *_ = EvalRequest(dataset, n=n, dataset_options=options).check()
    except DatasetMissing as err:  # the measurement, not the export, needs the data: say how to skip it
        raise DatasetMissing(f"{err} To export without measuring the agreement, pass --agreement-n 0.") from None
    model, _, tokenizer = load_clip(record["model"], record["path"], device=default_device(device))
    data = get_dataset(dataset, split, **{**options, "image_size": model.image_size,
                                          "resolution": DEFAULT_RESOLUTION})
    ids = fixed_subset(dataset, len(data), n, split)
    prompts = load_templates(spec.templates, dataset=spec.name)
    first = data[int(ids[0])][0]
    encoder, prepare = apply_resolution(model, tuple(first.shape[-2:]), DEFAULT_RESOLUTION)
    own = build_head(record["head"], encoder, tokenizer, [list(spec.classnames)], prompts)
    cosine = build_head({"kind": "cosine"}, encoder, tokenizer, [list(spec.classnames)], prompts)
    agree = 0
    with torch.no_grad():
        for start in range(0, len(ids), 128):
            x = prepare(torch.stack([data[int(i)][0] for i in ids[start:start + 128]]).to(model.mean.device))
            agree += int((own(x)[0].argmax(1) == cosine(x)[0].argmax(1)).sum())
    return {"dataset": dataset, "split": split, "n": int(len(ids)), "agree": agree, "rate": agree / len(ids)}


def export(run: str | os.PathLike, out: str | os.PathLike, *, drop_head: bool = False, agreement_n: int = AGREEMENT_N,
           root: str | None = None, device=None) -> Path:
    """Write run ``run``'s weights to ``out`` (suffix ``.safetensors``, ``.pt`` or ``.bin``); returns ``out``.

    A run whose head is not cosine needs ``drop_head=True``; its top-1 agreement with cosine logits is
    then measured on ``agreement_n`` images (0: not measured) and stored in the sidecar.
    """
    out = Path(out)
    if out.suffix not in FORMATS:
        raise ValueError(f"{out}: the suffix must be one of {FORMATS} (open_clip picks its loader by it)")
    if out.is_dir():
        raise IsADirectoryError(f"{out} is a folder; give a file name such as {out / 'robust.safetensors'}")
    check_writable_folder(out.parent, "export folder", "; give an OUT in a writable folder")
    record = runs.read_record(run)
    kind = (record.get("head") or {"kind": "cosine"})["kind"]
    if kind != "cosine" and not drop_head:
        raise ValueError(f"run {record['path']} classifies with a {kind!r} head, which plain open_clip does not have "
                         f"(it computes cosine logits, so top-1 decisions change): pass --drop-head (drop_head=True) "
                         f"to export the encoders anyway, with the two heads' top-1 agreement measured, or use the "
                         f"run through hrvlm (load_clip(model, pretrained=<run>))")
    if not (isinstance(agreement_n, int) and agreement_n >= 0):
        raise ValueError(f"agreement_n must be an integer >= 0, got {agreement_n!r}")
    agreement = None
    if kind != "cosine" and agreement_n:
        agreement = head_agreement(record, agreement_n, root, device)
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
        "head_dropped": kind != "cosine", "cosine_top1_agreement": agreement, "load": load_line(record["model"], out)})
    return out


def configure_parser(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Write a finished run's weights as a checkpoint for open_clip.create_model_and_transforms(MODEL, "
        "pretrained=OUT). open_clip's own models (e.g. ViT-B-32-quickgelu) need nothing else; hrvlm's mini-world "
        "models (hrvlm-tiny, hrvlm-tiny-cnn, whose CNN tower is hrvlm code) need `import hrvlm.models.clip; "
        "hrvlm.models.clip.register_configs()` first. open_clip scores classes with cosine logits: a run with another "
        "head (HRVLM's Poincaré head) is refused unless --drop-head, which measures and prints how often the two "
        "heads agree on top-1.")
    parser.add_argument("run", help="a finished run: its folder or name")
    parser.add_argument("out", help="checkpoint file to write (.safetensors, .pt or .bin)")
    parser.add_argument("--drop-head", action="store_true",
                        help="export a run whose head is not cosine (HRVLM's Poincaré head) for open_clip's cosine "
                             "logits, acknowledging that its head is dropped; the two heads' top-1 agreement is "
                             "measured and printed")
    parser.add_argument("--agreement-n", type=int, default=AGREEMENT_N,
                        help=f"images of the run's fine-tuning set's evaluation split on which that agreement is "
                             f"measured (default {AGREEMENT_N}; 0: not measured)")
    parser.add_argument("--root", default=None, help="data root of a real fine-tuning set (default $HRVLM_DATA)")
    parser.add_argument("--device", default=None, help="where the agreement is measured (default: cuda if available)")


def run(args: argparse.Namespace) -> int:
    # errors (no such run, bad suffix, a head to drop) are printed in one line by hrvlm.cli, before any work
    out = export(args.run, args.out, drop_head=args.drop_head, agreement_n=args.agreement_n, root=args.root,
                 device=args.device)
    import json

    sidecar = json.loads(out.with_name(out.name + ".json").read_text())
    if sidecar["head_dropped"]:
        agreement = sidecar["cosine_top1_agreement"]
        print(f"dropped the run's {sidecar['head']['kind']} head: open_clip's cosine logits "
              + ("were not compared with it (--agreement-n 0)" if agreement is None else
                 f"agree with it on {agreement['agree']} of {agreement['n']} top-1 decisions "
                 f"({agreement['rate']:.1%}) on {agreement['dataset']}/{agreement['split']}"))
    print(f"wrote {out}; load it with {sidecar['load']}")
    return 0
