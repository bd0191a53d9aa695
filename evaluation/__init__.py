"""Evaluation of the demo world model (`make demo-eval`, `python -m evaluation`): metrics, planning episodes and
the report in docs/demo_world.md. Outside the models -> export -> service chain: it uses all three."""
