"""bl-eval's command-line apps: `eval`, `predict` and `studio` (`uv run apps/NAME` in a checkout,
`bl-eval`, `bl-predict` and `bl-studio` when installed)."""
