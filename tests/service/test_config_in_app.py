"""The app runs with the groups built once at start-up: no request rebuilds a limits object, and /limits reports
the settings each limit comes from (torch-free fake model)."""

from __future__ import annotations

import pytest

from service.api.schemas import Limits
from service.config import ServerConfig
from service.media.payload import MediaLimits
from tests.conftest import serving
from tests.support.toolkit import b64


@pytest.fixture
def model_repository(fake_repository):
    return fake_repository


def test_media_limits_are_made_once_per_process_not_per_request(settings_factory, photos, monkeypatch):
    settings = settings_factory(embed_cache="off")  # every request decodes
    with serving(settings) as client:
        services = client.app.state.services
        held = services.media
        assert services.config is settings.config  # the object start-up built, not a copy
        assert held.image.memory is services.executors.image_memory  # around this process's decode budget
        assert held.video is settings.config.media.video

        made = []
        build_config = ServerConfig.from_settings.__func__
        monkeypatch.setattr(ServerConfig, "from_settings",
                            classmethod(lambda cls, s: made.append("config") or build_config(cls, s)))
        init = MediaLimits.__init__
        monkeypatch.setattr(MediaLimits, "__init__", lambda self, *a, **k: made.append("media") or init(self, *a, **k))
        for name in ("chelsea", "coffee"):
            response = client.post("/embed", json={"inputs": [{"image": b64(photos[name])}]})
            assert response.status_code == 200, response.text
        form = client.post("/embed", files=[("files", ("cat.png", photos["astronaut"], "image/png"))])
        assert form.status_code == 200, form.text
        assert made == []
        assert services.media is held


def test_limits_reports_each_setting_under_its_name(settings_factory):
    settings = settings_factory(max_request_items=7, max_image_pixels=1_000_000, max_video_frames=99,
                                stream_buffer_frames=3, max_plan_horizon=5, predictor_max_batch_size=512,
                                max_surprise_steps=17, max_search_k=33)
    with serving(settings) as client:
        reported = client.get("/limits").json()
    assert reported == {name: getattr(settings, name) for name in Limits.model_fields}
    assert reported["max_plan_samples"] == 512  # its default follows the predictor's batch
