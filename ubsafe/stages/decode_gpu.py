"""The GPU decode path: JPEG bytes → nvJPEG in batches → resize and centre crop on the device.

The CPU path (`ubsafe.stages.common.iter_decoded`) decodes with PIL and runs the encoder's own PIL
transform per image. With the GPU path, baseline RGB or greyscale JPEGs are decoded together by
`torchvision.io.decode_jpeg(device=...)` (nvJPEG on CUDA) and every image, whatever decoded it, is
resized (shortest side, the encoder's interpolation, antialiased) and centre-cropped as a uint8
tensor on the device, then scaled to [0, 1]: the same steps as the PIL transform, on tensors.

Everything else falls back to `ubsafe.data.images.decode_image`, so the skip reasons are those of
the CPU path: other formats, CMYK and progressive JPEGs, an EXIF orientation to apply, a header over
the pixel limit, a file without its end marker, and any file the batch decoder refuses (it is then
decoded alone, and on CPU if it fails again). An encoder whose preprocessing the tensor resize
does not reproduce (a `longest` or `squash` resize, transformers' image processor) keeps its own
PIL transform after the decode.

The two paths round differently (another IDCT, another resampler), so embeddings from them never
share a cache folder: `identity` is added to the cache key of a run that decodes on the GPU, and
`provenance` names the libraries in each shard file.

A small prefetch thread decodes and resizes the next group of images, on a side CUDA stream when
there is one, while the caller encodes the current one. Each image's pixels depend on its own bytes
only, whatever group it came in; the CPU run of this path (device `cpu`, the fallback when CUDA is
absent) is tested for it, the CUDA run by the tests marked `gpu`.
"""

from __future__ import annotations

import contextlib
import io
import queue
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ubsafe.data.images import MAX_PIXELS, DecodeError, decode_image

if TYPE_CHECKING:
    import torch
    from PIL import Image

#: Added to the embedding identity of runs that decode on the GPU; bump when its steps change.
IDENTITY = "gpu-decode-v1"

#: Images decoded by one call of the batch decoder (and prepared ahead of the encoder).
GROUP = 64

_JPEG_START = b"\xff\xd8"
_JPEG_END = b"\xff\xd9"
_EXIF_ORIENTATION = 0x0112

Entry = tuple[str, "bytes | None", str]
Item = tuple[str, "torch.Tensor | None", str]


def wanted(device: str) -> bool:
    """Whether a run on `device` (its config value) decodes on the GPU: only a pinned CUDA device.

    `auto` keeps the CPU path, so the cache key (and `ubsafe status` on a login node without a GPU)
    does not depend on the machine that reads the config.
    """
    return device.startswith("cuda")


def provenance(path: str, device: torch.device | str) -> dict[str, str]:
    """The decode facts for a shard file's attributes: the path and the libraries behind it."""
    import PIL

    facts = {"decode": path, "pillow": PIL.__version__}
    if path == "gpu":
        import torch
        import torchvision

        on_cuda = str(device).startswith("cuda")
        facts["torchvision"] = torchvision.__version__
        facts["jpeg_decoder"] = "nvjpeg" if on_cuda else "libjpeg-turbo (torchvision)"
        if on_cuda and torch.version.cuda:
            facts["cuda"] = torch.version.cuda
    return facts


@dataclass(frozen=True)
class TensorResize:
    """The encoder's resize and centre crop, on uint8 tensors [3, H, W] → float32 [3, S, S]."""

    resize: int
    crop: int
    interpolation: str

    @classmethod
    def of(cls, encoder: Any) -> TensorResize | None:
        """The tensor form of `encoder`'s own transform, or None where it would not be the same."""
        entry = getattr(encoder, "entry", None)
        preprocess = getattr(entry, "preprocess", None)
        if preprocess is None or preprocess.pipeline != "open_clip":
            return None
        if preprocess.resize_mode != "shortest" or preprocess.crop != encoder.image_size:
            return None
        return cls(preprocess.resize, preprocess.crop, preprocess.interpolation)

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        import torch
        from torchvision.transforms import InterpolationMode
        from torchvision.transforms.v2 import functional as F

        mode = InterpolationMode(self.interpolation)
        resized = F.resize(image, [self.resize], interpolation=mode, antialias=True)
        cropped = F.center_crop(resized, [self.crop, self.crop])
        return cropped.to(torch.float32).div_(255.0)


def batch_decodable(data: bytes, max_pixels: int = MAX_PIXELS) -> bool:
    """Whether the batch decoder may take `data`: a complete baseline RGB/grey JPEG, no rotation."""
    if not (data.startswith(_JPEG_START) and data.rstrip(b"\x00").endswith(_JPEG_END)):
        return False
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            if image.format != "JPEG" or image.mode not in ("RGB", "L"):
                return False
            if image.info.get("progressive") or image.info.get("progression"):
                return False
            width, height = image.size
            if width <= 0 or height <= 0 or width * height > max_pixels:
                return False
            orientation = image.getexif().get(_EXIF_ORIENTATION, 1)
            return orientation in (0, 1)
    except Exception:
        return False


class GpuInputs:
    """Encoder inputs from image bytes on the GPU path (see the module notes)."""

    def __init__(
        self,
        encoder: Any,
        device: torch.device | str,
        *,
        workers: int = 2,
        group: int = GROUP,
    ) -> None:
        import torch

        self.encoder = encoder
        self.device = torch.device(device)
        self.resize = TensorResize.of(encoder)
        self.workers = max(1, workers)
        self.group = max(1, group)
        #: images that left the batch decoder for the CPU decode (for the log and the tests)
        self.fallbacks = 0

    # --- one group ---

    def _cpu_item(self, sample_id: str, data: bytes) -> Item:
        """PIL decode (the CPU path's reasons), then the same resize as the batch-decoded images."""
        try:
            image = decode_image(data)
        except DecodeError as exc:
            return sample_id, None, str(exc)
        return sample_id, self._from_pil(image), ""

    def _from_pil(self, image: Image.Image) -> torch.Tensor:
        if self.resize is None:
            return self.encoder.to_input(image).to(self.device)
        from torchvision.transforms.v2 import functional as F

        return self.resize(F.pil_to_tensor(image).to(self.device))

    def _finish(self, image: torch.Tensor) -> torch.Tensor:
        """A decoded uint8 [3, H, W] tensor to an encoder input on the device."""
        if self.resize is not None:
            return self.resize(image)
        from torchvision.transforms.v2 import functional as F

        return self.encoder.to_input(F.to_pil_image(image.cpu()))

    def _decode_jpegs(self, blobs: list[bytes]) -> list[torch.Tensor | None]:
        """Batch decode; on a refusal decode each alone, None for those refused again."""
        import torch
        from torchvision.io import ImageReadMode, decode_jpeg

        _quiet_torchvision_io()
        tensors = [torch.frombuffer(bytearray(blob), dtype=torch.uint8) for blob in blobs]
        try:
            return list(decode_jpeg(tensors, mode=ImageReadMode.RGB, device=self.device))
        except RuntimeError:
            out: list[torch.Tensor | None] = []
            for tensor in tensors:
                try:
                    out.append(decode_jpeg(tensor, mode=ImageReadMode.RGB, device=self.device))
                except RuntimeError:
                    out.append(None)
            return out

    def prepare(self, entries: list[Entry], pool: ThreadPoolExecutor) -> list[Item]:
        """Decode and resize one group, in order."""
        results: list[Item | None] = [None] * len(entries)
        fast: list[int] = []
        slow: dict[int, Any] = {}
        for i, (sample_id, data, reason) in enumerate(entries):
            if data is None:
                results[i] = (sample_id, None, reason)
            elif batch_decodable(data):
                fast.append(i)
            else:
                slow[i] = pool.submit(self._cpu_item, sample_id, data)
        if fast:
            decoded = self._decode_jpegs([entries[i][1] or b"" for i in fast])
            for i, image in zip(fast, decoded, strict=True):
                sample_id, data, _ = entries[i]
                if image is None or image.ndim != 3 or image.shape[0] != 3:
                    self.fallbacks += 1
                    slow[i] = pool.submit(self._cpu_item, sample_id, data or b"")
                else:
                    results[i] = (sample_id, self._finish(image), "")
        for i, future in slow.items():
            results[i] = future.result()
        return [item for item in results if item is not None]

    # --- the stream ---

    def iter(self, entries: Iterable[Entry]) -> Iterator[Item]:
        """Yield (sample_id, input or None, skip reason) in order, one group prepared ahead."""
        import torch

        side = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None
        ahead: queue.Queue[Any] = queue.Queue(maxsize=2)
        stop = threading.Event()

        def produce() -> None:
            try:
                with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
                    for chunk in _chunks(entries, self.group):
                        if stop.is_set():
                            return
                        if side is None:
                            ahead.put((self.prepare(chunk, pool), None))
                            continue
                        with torch.cuda.stream(side):
                            items = self.prepare(chunk, pool)
                            ready = torch.cuda.Event()
                            ready.record(side)
                        ahead.put((items, ready))
                ahead.put(None)
            except BaseException as exc:  # handed to the consumer, which raises it
                ahead.put(exc)

        thread = threading.Thread(target=produce, name="decode-gpu", daemon=True)
        thread.start()
        try:
            while True:
                got = ahead.get()
                if got is None:
                    break
                if isinstance(got, BaseException):
                    raise got
                items, ready = got
                if ready is not None:
                    torch.cuda.current_stream(self.device).wait_event(ready)
                    for _, pixels, _ in items:
                        if pixels is not None:
                            pixels.record_stream(torch.cuda.current_stream(self.device))
                yield from items
        finally:
            stop.set()
            while thread.is_alive():  # let a producer blocked on a full queue finish
                with contextlib.suppress(queue.Empty):
                    ahead.get(timeout=0.1)
            thread.join()


def _quiet_torchvision_io() -> None:
    """torchvision 0.29 warns on each call that its image codecs move to TorchCodec; they stay."""
    warnings.filterwarnings(
        "ignore",
        message="The image decoding and encoding capabilities",
        category=DeprecationWarning,
    )


def _chunks(entries: Iterable[Entry], size: int) -> Iterator[list[Entry]]:
    chunk: list[Entry] = []
    for entry in entries:
        chunk.append(entry)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def iter_inputs(
    entries: Iterable[Entry],
    encoder: Any,
    device: torch.device | str,
    *,
    workers: int = 2,
    group: int = GROUP,
    on_done: Callable[[GpuInputs], None] | None = None,
) -> Iterator[Item]:
    """`GpuInputs(encoder, device).iter(entries)`; `on_done` sees the decoder afterwards."""
    decoder = GpuInputs(encoder, device, workers=workers, group=group)
    yield from decoder.iter(entries)
    if on_done is not None:
        on_done(decoder)
