"""Minimal safetensors reader/writer on numpy (no `safetensors` package needed).

Format (https://github.com/huggingface/safetensors): an 8-byte little-endian u64 header length N,
N bytes of UTF-8 JSON {name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}} padded with spaces to a multiple of 8, then the data buffer, which the tensors tile
exactly (offsets relative to its start, little-endian, row-major).
"""

import json
import struct

import numpy as np

METADATA_KEY = "__metadata__"
MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit

# safetensors dtype name -> little-endian numpy dtype. BF16 has no numpy dtype: it is read as raw
# uint16 bits and widened to float32 (_bf16_to_f32); save() writes float32 wrapped in BF16(...)
# rounded to nearest even (f32_to_bf16_bits).
_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "U16": np.dtype("<u2"),
    "BOOL": np.dtype("?"),
}
_NAMES = {
    np.dtype("float64"): "F64",
    np.dtype("float32"): "F32",
    np.dtype("float16"): "F16",
    np.dtype("int64"): "I64",
    np.dtype("int32"): "I32",
    np.dtype("int16"): "I16",
    np.dtype("int8"): "I8",
    np.dtype("uint8"): "U8",
    np.dtype("uint16"): "U16",
    np.dtype("bool"): "BOOL",
}


def _bf16_to_f32(raw):
    """Widens raw bfloat16 bits (uint16 array) to float32 exactly."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """Rounds float32 values to bfloat16 (nearest even, NaN kept quiet) as uint16 bits."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    bits = x.view(np.uint32).astype(np.uint64)  # room for the carry of the rounding add
    rounded = (bits + 0x7FFF + ((bits >> 16) & 1)) >> 16
    return np.where(np.isnan(x), (bits >> 16) | 0x40, rounded).astype(np.uint16)


class BF16:
    """Marks a float array to be stored as BF16 by save()."""

    def __init__(self, array):
        self.array = np.asarray(array, dtype=np.float32)


def read_header(path):
    """Returns (tensors: {name: (dtype, shape, begin, end)}, metadata, data_start) of a file."""
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: shorter than the 8-byte header length")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES:
            raise ValueError(f"{path}: header length {n} exceeds {MAX_HEADER_BYTES}")
        raw = f.read(n)
        if len(raw) != n:
            raise ValueError(f"{path}: header runs past the end of the file")
    header = json.loads(raw.decode("utf-8"))
    if not isinstance(header, dict):
        raise ValueError(f"{path}: header is not a JSON object")
    metadata = header.pop(METADATA_KEY, {}) or {}
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError(f"{path}: {METADATA_KEY} must map strings to strings")
    tensors = {}
    for name, e in header.items():
        dtype = e["dtype"]
        if dtype not in _DTYPES:
            raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {dtype!r}")
        shape = tuple(int(d) for d in e["shape"])
        begin, end = (int(o) for o in e["data_offsets"])
        nbytes = _DTYPES[dtype].itemsize * int(np.prod(shape, dtype=np.int64))
        if end - begin != nbytes:
            raise ValueError(f"{path}: tensor {name!r} offsets [{begin}, {end}] do not match "
                             f"shape {list(shape)} of {dtype} ({nbytes} bytes)")
        tensors[name] = (dtype, shape, begin, end)
    return tensors, metadata, 8 + n


def load(path, with_metadata=False, bf16_as_f32=True):
    """Reads a file into {name: numpy array} (and the metadata dict when with_metadata)."""
    tensors, metadata, start = read_header(path)
    with open(path, "rb") as f:
        f.seek(start)
        buffer = f.read()
    # The tensors must tile the buffer exactly: no gaps, no overlap, nothing after them.
    pos = 0
    for name, (_, _, begin, end) in sorted(tensors.items(), key=lambda kv: kv[1][2:]):
        if begin != pos:
            raise ValueError(f"{path}: tensor {name!r} starts at {begin}, expected {pos}")
        pos = end
    if pos != len(buffer):
        raise ValueError(f"{path}: data buffer is {len(buffer)} bytes, tensors cover {pos}")
    out = {}
    for name, (dtype, shape, begin, end) in tensors.items():
        a = np.frombuffer(buffer, dtype=_DTYPES[dtype], count=(end - begin) // _DTYPES[dtype].itemsize,
                          offset=begin).reshape(shape).copy()
        if dtype == "BF16" and bf16_as_f32:
            a = _bf16_to_f32(a)
        out[name] = a
    return (out, metadata) if with_metadata else out


def save(path, tensors, metadata=None):
    """Writes {name: numpy array or BF16(array)} in the given order, tightly packed."""
    header = {}
    if metadata:
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise ValueError(f"{path}: metadata must map strings to strings")
        header[METADATA_KEY] = dict(metadata)
    chunks, offset = [], 0
    for name, value in tensors.items():
        if name == METADATA_KEY:
            raise ValueError(f"{path}: {METADATA_KEY!r} is reserved, not a tensor name")
        if isinstance(value, BF16):
            dtype, data = "BF16", f32_to_bf16_bits(value.array)
            shape = value.array.shape
        else:
            a = np.asarray(value)
            if a.dtype not in _NAMES:
                raise ValueError(f"{path}: tensor {name!r} has unsupported dtype {a.dtype}")
            dtype, data, shape = _NAMES[a.dtype], a, a.shape
        blob = np.ascontiguousarray(data, dtype=_DTYPES[dtype]).tobytes()
        header[name] = {"dtype": dtype, "shape": [int(d) for d in shape],
                        "data_offsets": [offset, offset + len(blob)]}
        chunks.append(blob)
        offset += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in chunks:
            f.write(blob)
