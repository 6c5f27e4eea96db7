"""Gate arrays on disk, written piece by piece: HDF5 (h5py) or a folder of ``.npy`` files.

Layout, for every captured layer ``key`` and gate ``update``/``reset``/``candidate``, each
(samples, timesteps, units):

- HDF5: dataset ``/<key>/<gate>`` (a Bidirectional's ``bi/forward`` is the nested group
  ``/bi/forward``), chunked so that a piece of the time axis is one write;
- npy: ``<path>/<key>/<gate>.npy``, a plain ``.npy`` file that ``np.load(...,
  mmap_mode="r")`` maps without reading it.

Writing never maps the output into memory (dirty mapped pages would count towards the
process's resident memory and grow with the file): npy pieces are written with
``seek``/``write``, HDF5 pieces through h5py's small chunk cache.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from gategru.plotting import GATE_NAMES

FORMATS = ("h5", "npy")
DTYPES = ("float32", "float16")
# Target bytes per HDF5 chunk: large enough for fast writes, small enough to cache.
_H5_CHUNK_BYTES = 1 << 20
# Bytes before the data in the .npy files written here (a multiple of 64, as numpy wants).
_NPY_HEADER = 256


def format_for(path: str | os.PathLike, format: str | None) -> str:
    """The format to write: given, or from the path (``.h5``/``.hdf5``: h5, else npy)."""
    if format is not None:
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        return format
    return "h5" if Path(path).suffix.lower() in (".h5", ".hdf5") else "npy"


def _check_dtype(dtype: object) -> np.dtype:
    dt = np.dtype(dtype)
    if dt.name not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dt.name}")
    return dt


class GateWriter:
    """Writes pieces of gate arrays whose final shape is (samples, timesteps, units).

    ``timesteps`` may be None when unknown in advance (a stream of chunks): the arrays
    then grow along time, which for npy needs ``samples == 1`` (a (samples, T, units)
    file is laid out sample after sample).

    Use as a context manager; :meth:`close` finishes the files.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        layers: Mapping[str, tuple[int, int | None, int]],
        format: str | None = None,
        dtype: object = "float32",
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.format = format_for(path, format)
        self.dtype = _check_dtype(dtype)
        self.layers = {key: tuple(shape) for key, shape in layers.items()}
        self.timesteps = 0  # the furthest time written
        self._files: dict[tuple[str, str], Any] = {}
        if self.format == "h5":
            self._open_h5(attrs or {})
        else:
            self._open_npy()

    # ---- HDF5 --------------------------------------------------------------------------------
    def _open_h5(self, attrs: Mapping[str, Any]) -> None:
        try:
            import h5py
        except ImportError as err:
            raise ImportError("writing HDF5 needs h5py: pip install h5py") from err
        if self.path.parent and not self.path.parent.is_dir():
            raise FileNotFoundError(f"directory {str(self.path.parent)!r} does not exist")
        self._h5 = h5py.File(self.path, "w")
        for name, value in attrs.items():
            self._h5.attrs[name] = value
        for key, (samples, timesteps, units) in self.layers.items():
            group = self._h5.require_group(key)
            per_chunk = max(1, _H5_CHUNK_BYTES // (units * self.dtype.itemsize))
            chunk_t = per_chunk if timesteps is None else max(1, min(per_chunk, timesteps))
            for name in GATE_NAMES:
                self._files[key, name] = group.create_dataset(
                    name,
                    shape=(samples, timesteps or 0, units),
                    maxshape=(samples, timesteps, units),
                    chunks=(1, chunk_t, units),
                    dtype=self.dtype,
                )

    # ---- npy ---------------------------------------------------------------------------------
    def _open_npy(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{str(self.path)!r} exists and is not a directory")
        for key, (samples, timesteps, units) in self.layers.items():
            if timesteps is None and samples != 1:
                raise ValueError(
                    "npy output of a stream of unknown length needs one sample "
                    f"(layer {key!r} has {samples}); write HDF5 or give the length"
                )
            folder = self.path / key
            folder.mkdir(parents=True, exist_ok=True)
            for name in GATE_NAMES:
                handle = open(folder / f"{name}.npy", "w+b")  # noqa: SIM115 closed in close()
                self._files[key, name] = handle
                # A header now, rewritten at close when the length was unknown.
                self._write_header(handle, (samples, timesteps or 0, units))

    def _write_header(self, handle: Any, shape: tuple[int, int, int]) -> None:
        # A fixed-size header (padded with spaces, as numpy pads), so that the shape can
        # be rewritten in place once a stream's length is known.
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": shape,
        }
        text = repr(header).encode("latin1")
        magic = np.lib.format.magic(1, 0)
        length = _NPY_HEADER - len(magic) - 2
        handle.seek(0)
        handle.write(magic + length.to_bytes(2, "little") + text.ljust(length - 1) + b"\n")

    # ---- writing -----------------------------------------------------------------------------
    def write(self, key: str, gates: Mapping[str, np.ndarray], samples: slice, start: int) -> None:
        """Writes ``gates[name][i, t]`` to sample ``samples.start + i``, time ``start + t``."""
        _, timesteps, units = self.layers[key]
        for name in GATE_NAMES:
            piece = np.asarray(gates[name]).astype(self.dtype, copy=False)
            n, steps = piece.shape[0], piece.shape[1]
            stop = start + steps
            if piece.shape[2] != units or samples.stop - samples.start != n:
                raise ValueError(f"piece of shape {piece.shape} does not fit layer {key!r}")
            if timesteps is not None and stop > timesteps:
                raise ValueError(f"time {stop} is past the {timesteps} steps of layer {key!r}")
            target = self._files[key, name]
            if self.format == "h5":
                if timesteps is None and stop > target.shape[1]:
                    target.resize(stop, axis=1)
                target[samples.start : samples.stop, start:stop] = piece
            else:
                row = timesteps if timesteps is not None else 0
                for i in range(n):
                    offset = ((samples.start + i) * row + start) * units * self.dtype.itemsize
                    target.seek(_NPY_HEADER + offset)
                    target.write(np.ascontiguousarray(piece[i]).tobytes())
        self.timesteps = max(self.timesteps, start + np.shape(gates[GATE_NAMES[0]])[1])

    def close(self) -> None:
        if not self._files:
            return
        if self.format == "h5":
            self._h5.close()
        else:
            for (key, _), handle in self._files.items():
                samples, timesteps, units = self.layers[key]
                if timesteps is None:
                    self._write_header(handle, (samples, self.timesteps, units))
                handle.close()
        self._files = {}

    def __enter__(self) -> GateWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def load_gates(path: str | os.PathLike, mmap: bool = True) -> dict[str, dict[str, Any]]:
    """Reads what :class:`GateWriter` wrote: ``{key: {"update", "reset", "candidate"}}``.

    npy folders load as read-only memory maps (``mmap=True``) or arrays; HDF5 loads as
    numpy arrays (``mmap=True`` gives h5py datasets instead, read on slicing, valid
    while the file stays open: it is closed when they are garbage collected).
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{str(path)!r} does not exist")
    result: dict[str, dict[str, Any]] = {}
    if path.is_dir():
        for file in sorted(path.rglob("update.npy")):
            key = file.parent.relative_to(path).as_posix()
            result[key] = {
                name: np.load(file.parent / f"{name}.npy", mmap_mode="r" if mmap else None)
                for name in GATE_NAMES
            }
        return result
    import h5py

    handle = h5py.File(path, "r")

    def visit(name: str, item: Any) -> None:
        if isinstance(item, h5py.Group) and all(g in item for g in GATE_NAMES):
            result[name] = {g: item[g] if mmap else item[g][()] for g in GATE_NAMES}

    handle.visititems(visit)
    if not mmap:
        handle.close()
    return result
