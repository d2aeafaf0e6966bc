"""Training: the thin LightningModule, optimizer/schedule, MFU, checkpoints and the run entry point."""
