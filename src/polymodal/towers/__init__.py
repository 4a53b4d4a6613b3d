"""polymodal.towers."""
