"""Checking answers and trying again: the llguidance matcher (`matcher`, `follow`), the grammar ladder and its
interpreter mixin (`ladder`, `grammar`), and JSON / select through DeepInfra's structured output with its
attempts (`json_select`, `attempts`)."""
