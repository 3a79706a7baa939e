"""A sparse encoding of a state dict, written to a real file so its size is measured, not estimated:
one packed bit mask of the non-zeros of every floating tensor, their non-zero values (float32) and a
JSON header (names, shapes, dtypes, small integer buffers), DEFLATE-compressed (np.savez_compressed).
It round-trips exactly (:func:`read_sparse`)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from ..runs import atomic_path


def write_sparse(state: dict[str, torch.Tensor], path: Path | str) -> int:
    """Write the encoding to `path` (.npz); returns its size in bytes."""
    header, masks, values = [], [], []
    for name, tensor in state.items():
        a = tensor.detach().cpu().numpy()
        entry = {"name": name, "shape": list(a.shape), "dtype": str(a.dtype)}
        if a.dtype.kind == "f":
            mask = a.ravel() != 0
            masks.append(mask)
            values.append(a.ravel()[mask].astype(np.float32))
        else:
            entry["values"] = a.ravel().tolist()
        header.append(entry)
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8),
                            mask=np.packbits(np.concatenate(masks) if masks else np.zeros(0, bool)),
                            values=np.concatenate(values) if values else np.zeros(0, np.float32))
    return path.stat().st_size


def read_sparse(path: Path | str) -> dict[str, torch.Tensor]:
    with np.load(path, allow_pickle=False) as data:
        header = json.loads(data["header"].tobytes())
        bits, values = data["mask"], data["values"]
    n_float = sum(int(np.prod(e["shape"])) for e in header if "values" not in e)
    mask = np.unpackbits(bits, count=n_float).astype(bool)
    out, pos, vpos = {}, 0, 0
    for e in header:
        dtype, n = np.dtype(e["dtype"]), int(np.prod(e["shape"]))
        if "values" in e:
            flat = np.asarray(e["values"], dtype=dtype)
        else:
            m = mask[pos:pos + n]
            flat = np.zeros(n, dtype=dtype)
            flat[m] = values[vpos:vpos + int(m.sum())]
            pos, vpos = pos + n, vpos + int(m.sum())
        out[e["name"]] = torch.from_numpy(flat.reshape(e["shape"]))
    return out
