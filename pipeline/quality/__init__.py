"""Per-sample quality: image metrics (PSNR, SSIM, LPIPS, FID/KID) and the no-reference signals, used on the hot path and by every report."""
