"""polymodal.nn."""
