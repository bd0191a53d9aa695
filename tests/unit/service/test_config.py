"""The settings in groups (service/config.py): built once from the flat settings, frozen, and every rule between two
settings checked in that one place, broken rules said in one line naming their variables."""

from __future__ import annotations

import dataclasses

import pytest

from service.config import ServerConfig
from service.settings import Settings, SettingsError, load_settings


def _dataclasses_in(value: object, path: str) -> list[tuple[str, object]]:
    """`value` and every dataclass inside it, with where it sits (config.limits.world, ...)."""
    if not dataclasses.is_dataclass(value):
        return []
    found = [(path, value)]
    for field in dataclasses.fields(value):
        found += _dataclasses_in(getattr(value, field.name), f"{path}.{field.name}")
    return found


def test_each_group_is_built_once_and_frozen(monkeypatch):
    built = []
    build = ServerConfig.from_settings.__func__

    def counting(cls, settings):
        built.append(settings)
        return build(cls, settings)

    monkeypatch.setattr(ServerConfig, "from_settings", classmethod(counting))
    settings = Settings(max_batch_size=8, stream_max_steps=99)
    config = settings.config
    assert built == [settings]
    assert settings.config is config  # read again: the same object, not a rebuild
    assert built == [settings]
    assert config.batching.policy.max_batch_size == 8
    assert config.stream.max_steps == 99

    groups = [name for name, value in vars(config).items() if dataclasses.is_dataclass(value)]
    assert groups == [field.name for field in dataclasses.fields(ServerConfig)]  # nothing but groups at the top
    for path, value in _dataclasses_in(config, "config"):
        assert type(value).__dataclass_params__.frozen, f"{path} is not frozen"
        first = dataclasses.fields(value)[0].name
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(value, first, getattr(value, first))


def test_auto_choices_that_follow_other_settings_are_decided_once():
    local, shared = Settings().config, Settings(storage="redis").config
    assert (local.cache.backend, shared.cache.backend) == ("memory", "redis")
    assert local.security.rate_limit.redis_url is None
    assert shared.security.rate_limit.redis_url.get_secret_value() == "redis://127.0.0.1:6379/0"
    assert Settings(storage="redis", rate_limit_redis_url="").config.security.rate_limit.redis_url is None
    assert Settings(data_dir="/srv/d").config.collections.milvus.uri == "/srv/d/milvus.db"
    assert Settings(batch_tune=True, warmup=False).config.batching.policy.tune is False  # tuning times the warm-up
    assert Settings(predictor_max_batch_size=64).config.limits.world.max_plan_samples == 64


@pytest.mark.parametrize(("overrides", "line"), [
    ({"max_plan_samples": 2048, "predictor_max_batch_size": 1024},
     "JEPA_MAX_PLAN_SAMPLES=2048 is above JEPA_PREDICTOR_MAX_BATCH_SIZE=1024: each CEM step is one predictor batch"),
    ({"image_decode_budget_bytes": 16 * 2**20, "max_image_pixels": 2_000_000},
     "JEPA_IMAGE_DECODE_BUDGET_BYTES=16777216 cannot hold one image of JEPA_MAX_IMAGE_PIXELS=2000000 (32000000 "
     "bytes: 16 a pixel)"),
    ({"preferred_batch_sizes": (4, 32), "max_batch_size": 16},
     "JEPA_PREFERRED_BATCH_SIZES=4,32 has 32 outside 1..JEPA_MAX_BATCH_SIZE=16"),
    ({"model_repository": "same", "data_dir": "same"}, "JEPA_MODEL_REPOSITORY and JEPA_DATA_DIR are both 'same'"),
    ({"milvus_uri": "milvus"}, "JEPA_MILVUS_URI='milvus' is neither a local file ending in .db"),
])
def test_a_cross_field_violation_is_one_clear_line(overrides, line):
    with pytest.raises(SettingsError) as caught:
        load_settings({}, **overrides)
    said = str(caught.value)
    assert "\n" not in said
    assert said.startswith(line)

