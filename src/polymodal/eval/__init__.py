"""polymodal.eval."""
