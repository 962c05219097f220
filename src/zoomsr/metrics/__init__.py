"""Image-quality metrics."""

from zoomsr.metrics.fidelity import psnr, rgb_to_y, ssim

__all__ = ["psnr", "rgb_to_y", "ssim"]
