"""The model zoo: MIRNet, MIRNet-v2 and the plain CNN, with their losses,
metrics and inference helper. Keras 3 only (``keras.layers`` and ``keras.ops``),
so the same code runs under the TensorFlow, JAX and PyTorch backends."""

from mirnet_pipeline.model import cnn, mirnet, mirnet_v2  # noqa: F401  (register the architectures)
from mirnet_pipeline.model.attention import ChannelPooling, NonLocalBlock, StreamSoftmax
from mirnet_pipeline.model.inference import AnySize, infer, infer_tiled, reflect_pad
from mirnet_pipeline.model.losses import LOSSES, PerceptualLoss, charbonnier, get_loss, loss_names
from mirnet_pipeline.model.metrics import mae, mae_metric, psnr, psnr_metric, reference_scores, ssim, ssim_metric
from mirnet_pipeline.model.mirnet_v2 import (
                                             BilinearUpSampling2D,
                                             ContextBlock,
                                             ResidualContextBlock,
                                             SelectiveKernelFusion,
)
from mirnet_pipeline.model.precision import PRECISIONS, with_precision
from mirnet_pipeline.model.registry import ARCHITECTURES, build_model, get_architecture, size_multiple

__all__ = [
    "ARCHITECTURES",
    "AnySize",
    "BilinearUpSampling2D",
    "ChannelPooling",
    "ContextBlock",
    "LOSSES",
    "NonLocalBlock",
    "PerceptualLoss",
    "PRECISIONS",
    "ResidualContextBlock",
    "SelectiveKernelFusion",
    "StreamSoftmax",
    "build_model",
    "charbonnier",
    "infer",
    "infer_tiled",
    "get_architecture",
    "get_loss",
    "loss_names",
    "mae",
    "mae_metric",
    "psnr",
    "psnr_metric",
    "reference_scores",
    "reflect_pad",
    "size_multiple",
    "ssim",
    "ssim_metric",
    "with_precision",
]
