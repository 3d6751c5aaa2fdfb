"""Running exported models: ONNX Runtime, OpenVINO and TensorFlow behind
``predict_on_batch``, the one method the inference helpers (``infer``,
``infer_tiled``) call, so tiling, blending and batching are the same code
whatever runs the model.

The runtime is inferred from the file (``.onnx``: ONNX Runtime, ``.xml``:
OpenVINO, a folder with ``saved_model.pb``: TensorFlow, ``.keras``: Keras) or
given; OpenVINO also runs ``.onnx`` files. A file that is not a model, or a
model that does not take and give (N, H, W, 3) images, fails when it is
opened, with its path in the message.

ONNX Runtime and OpenVINO run a batch as concurrent single-image requests
(``streams``: by default one per core, at most four, sharing the cores
between them) rather than one request whose operators are split across all
cores. On a few cores this is how they are fastest (docs/performance.md): an
image's operators on one core each need no synchronising between cores, and a
core taken for a moment by the batch job's decoding or encoding slows one
request instead of stalling every operator of the only one.
"""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from mirnet_pipeline.tasks.errors import UsageError
from mirnet_pipeline.tasks.storage import file_sha256

RUNTIMES = ("keras", "tensorflow", "onnxruntime", "openvino")
# the runtime that runs each export format of tasks.export.formats
FORMAT_RUNTIMES = {"saved_model": "tensorflow", "onnx": "onnxruntime", "openvino": "openvino"}
# what each runtime reads
READS = {"keras": (".keras",), "tensorflow": ("saved_model",), "onnxruntime": (".onnx",), "openvino": (".xml", ".onnx")}
# OpenVINO's CPU plugin computes in bfloat16 where the CPU has it unless told otherwise
OPENVINO_PRECISION = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


def available_cores() -> int:
    """The cores this process may run on (its affinity, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_streams(cores: int) -> int:
    """Concurrent requests: one per core, at most four (a batch rarely holds more)."""
    return max(1, min(4, cores))


class ModelFileError(UsageError):
    """A model file that cannot be run as asked; the message names it."""


def _kind(path: Path) -> str:
    if path.is_dir():
        return "saved_model" if (path / "saved_model.pb").is_file() else "folder"
    return path.suffix.lower()


def runtime_for(path: str | Path, runtime: str | None = None) -> str:
    """The runtime for ``path``: ``runtime`` checked against the file, or the
    one its kind implies."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"model {path}: no such file or folder")
    kind = _kind(path)
    if runtime is None:
        for name, kinds in READS.items():
            if kind in kinds:
                return name
        raise ModelFileError(f"model {path}: not a model file (expected .keras, .onnx, an OpenVINO .xml "
                             "or a SavedModel folder)")
    if runtime not in RUNTIMES:
        raise ModelFileError(f"runtime: expected one of {', '.join(RUNTIMES)}, got {runtime!r}")
    if kind not in READS[runtime]:
        raise ModelFileError(f"model {path}: {runtime} reads {' or '.join(READS[runtime])}, not this file")
    return runtime


# the largest model file read (hashed, loaded): far above any architecture here
MAX_MODEL_BYTES = 16 << 30


def _entries(folder: Path) -> list[Path]:
    """Everything under ``folder`` but folders themselves, links not followed
    (a link to a folder is an entry)."""
    found = []
    for root, folders, files in os.walk(folder, followlinks=False):
        found += [Path(root, name) for name in folders if os.path.islink(os.path.join(root, name))]
        found += [Path(root, name) for name in files]
    return sorted(found)


def _checked(model: Path, file: Path, folder: Path) -> Path:
    """``file`` if it is a regular file inside ``folder`` (through links or
    not) of at most ``MAX_MODEL_BYTES``; else ``ModelFileError`` naming it."""
    if not (file.exists() or file.is_symlink()):
        raise ModelFileError(f"model {model}: {file} is missing")
    target = file.resolve()
    if not target.is_relative_to(folder):
        raise ModelFileError(f"model {model}: {file} is a link to {target}, outside the model's folder {folder}; "
                             "copy the file into the folder")
    mode = target.stat().st_mode
    if not stat.S_ISREG(mode):
        kind = ("a folder" if stat.S_ISDIR(mode) else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
                else "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "not a file")
        raise ModelFileError(f"model {model}: {file} is {kind}, not a regular file")
    size = target.stat().st_size
    if size > MAX_MODEL_BYTES:
        raise ModelFileError(f"model {model}: {file} is {size:,} bytes, more than a model file can be "
                             f"({MAX_MODEL_BYTES:,})")
    return file


def model_files(path: str | Path) -> list[Path]:
    """The files a model consists of (the file, an OpenVINO .xml with its
    .bin, every file of a SavedModel folder), each checked before any of its
    bytes is read: a regular file inside the model's folder, of a bounded
    size. Links out of the folder, devices, pipes and missing files end in a
    ``ModelFileError`` naming the file (the model's own path may be a link:
    its target's folder is the model's)."""
    path = Path(path)
    real = path.resolve()
    if real.is_dir():
        return [_checked(path, file, real) for file in _entries(real)]
    folder = real.parent
    files = [real, real.with_suffix(".bin")] if real.suffix.lower() == ".xml" else [real]
    return [_checked(path, file, folder) for file in files]


def model_hash(path: str | Path) -> str:
    """``sha256:<hex>`` of the model's files (names and contents), so a
    different export or a different weight file is a different model."""
    path = Path(path)
    files = model_files(path)
    if len(files) == 1 and not path.is_dir():
        return f"sha256:{file_sha256(files[0])}"
    digest = hashlib.sha256()
    real = path.resolve()
    for file in files:
        name = file.relative_to(real).as_posix() if path.is_dir() else file.name
        digest.update(f"{name}\0{file_sha256(file)}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def single_images(batch: np.ndarray) -> list[np.ndarray]:
    """A batch as one-image batches (views, no copies)."""
    return [batch[i : i + 1] for i in range(len(batch))]


class ExportedModel:
    """An exported model behind ``predict_on_batch``. The export pads and crops
    inside its graph (``AnySize``), so the inference helpers need not:
    ``size_multiple`` is 1."""

    size_multiple = 1

    def __init__(self, path: str | Path, runtime: str | None = None, precision: str = "float32",
                 streams: int | None = None):
        self.path = Path(path)
        self.runtime = runtime_for(self.path, runtime)
        if self.runtime == "keras":
            raise ModelFileError(f"model {self.path}: a Keras file runs on Keras itself, not as an export")
        self.precision = precision
        self.name = self.path.stem
        cores = available_cores()
        self.streams = streams or default_streams(cores)
        # threads per request: the cores shared between the concurrent requests
        threads = max(1, cores // self.streams)
        try:
            self._run = getattr(self, f"_open_{self.runtime}")(threads)
        except ModelFileError:
            raise
        except Exception as exc:  # each runtime has its own errors for a corrupt file
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelFileError(f"model {self.path}: {self.runtime} cannot load it ({first[:300]})") from None

    def predict_on_batch(self, batch) -> np.ndarray:
        return np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)

    def _check_shape(self, shape) -> None:
        """An image model: 4-D input with 3 channels last (other sides free or fixed)."""
        dims = list(shape)
        if len(dims) != 4 or dims[-1] not in (3, "3"):
            raise ModelFileError(f"model {self.path}: expects input of shape {dims}, not (N, H, W, 3) images")

    def _open_onnxruntime(self, threads):
        if self.precision != "float32":
            raise ModelFileError(f"model {self.path}: onnxruntime runs it in float32 only, not {self.precision}")
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        # no busy-waiting between runs: the batch job's reading, decoding and
        # writing threads need those cores
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        inputs = session.get_inputs()
        if len(inputs) != 1:
            raise ModelFileError(f"model {self.path}: has {len(inputs)} inputs, expected one batch of images")
        self._check_shape(inputs[0].shape)
        name = inputs[0].name

        def run_one(image):  # a session runs concurrent calls; each releases the GIL
            return session.run(None, {name: image})[0]

        if self.streams == 1:
            return run_one
        self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="onnxruntime")
        return lambda batch: np.concatenate(list(self._pool.map(run_one, single_images(batch))))

    def _open_openvino(self, threads):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(self.path))
        if len(model.inputs) != 1:
            raise ModelFileError(f"model {self.path}: has {len(model.inputs)} inputs, expected one batch of images")
        shape = model.inputs[0].get_partial_shape()
        self._check_shape([d.get_length() if d.is_static else None for d in shape] if shape.rank.is_static else [])
        # threads not pinned to cores: the batch job's I/O threads share them;
        # one stream per concurrent request, its own threads each
        config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[self.precision], "ENABLE_CPU_PINNING": False,
                  "PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": self.streams,
                  "INFERENCE_NUM_THREADS": threads * self.streams}
        compiled = core.compile_model(model, "CPU", config)
        queue = ov.AsyncInferQueue(compiled, self.streams)
        # one batch at a time: the queue and its outputs are shared (the batch
        # job calls the model under its lock)
        outputs: dict[int, np.ndarray] = {}

        def keep(request, index):  # the request is reused: its output is copied now
            outputs[index] = np.array(request.get_output_tensor(0).data)

        queue.set_callback(keep)

        def run(batch):
            outputs.clear()
            for index, image in enumerate(single_images(batch)):
                queue.start_async({0: image}, index)
            queue.wait_all()
            return np.concatenate([outputs[i] for i in range(len(batch))])

        return run

    def _open_tensorflow(self, threads):
        if self.precision != "float32":
            raise ModelFileError(f"model {self.path}: the SavedModel runs in float32 only, not {self.precision}")
        import tensorflow as tf

        loaded = tf.saved_model.load(str(self.path))
        serve = getattr(loaded, "serve", None)
        if serve is None:
            raise ModelFileError(f"model {self.path}: the SavedModel has no 'serve' endpoint")
        self._loaded = loaded  # its variables live as long as the model does
        return lambda batch: serve(tf.constant(batch)).numpy()
