"""ml-collections config files. `base_<task>.py` holds a task's LRA defaults; `<model>_<task>.py`
picks the attention. `--config=configs/x.py:quick` passes "quick" to `get_config`."""
