"""Built-in DSP plugins (Python objects that follow the plugin contract)."""
