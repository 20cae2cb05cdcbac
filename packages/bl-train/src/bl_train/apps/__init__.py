"""bl-train's command-line app: `train` (`uv run apps/train` in a checkout, `bl-train` when installed)."""
