"""GET /ui: a page to look at the collections, search them and draw surprise curves, served from this package.

Offline like /docs: plain HTML, JavaScript and CSS in service/api/ui_assets (no CDN, no build step), installed as
package data. The page and its assets are public (they hold no data, like /docs); every call the page makes goes
to the API with the key the user types (`Authorization: Bearer`), so keys and scopes apply as to any client.

Thumbnails: GET /ui/media/{path} returns the image at `path` under JEPA_UI_MEDIA_DIR, scaled to fit
THUMBNAIL_PX, for hits whose metadata `path` is relative to that folder (as `jepa-serve-client index` stores it).
Off unless the setting names a folder. A path that would leave the folder (`..`, an absolute path, a symlink out,
an encoded slash) gets the same 404 as a missing file; only files that decode as images within the image limits
are answered, so a stray text file in the folder is never sent.
"""

from __future__ import annotations

import html
import io
from pathlib import Path, PurePosixPath

from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from service.api.deps import ServicesDep
from service.config import ServerConfig
from service.errors import ErrorCode, NotFound, PayloadTooLarge
from service.media.images import ImageLimits, decode_image

ASSETS_DIR = Path(__file__).parent / "ui_assets"
ASSETS_URL = "/ui/assets"  # ui.js, ui.css (public, like /docs/assets)
MEDIA_URL = "/ui/media"
THUMBNAIL_PX = 256  # the longer side of a thumbnail

router = APIRouter(include_in_schema=False)


@router.get("/ui", response_class=HTMLResponse)
async def ui_page(request: Request) -> HTMLResponse:
    config: ServerConfig = request.app.state.config
    root = html.escape(request.scope.get("root_path", ""), quote=True)
    page = (ASSETS_DIR / "index.html").read_text(encoding="utf-8")
    page = page.replace("{{base}}", root).replace("{{thumbnails}}", "on" if config.media.ui_media_dir else "off")
    # The page runs only its own script and talks only to this server.
    policy = ("default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
              "connect-src 'self'; frame-ancestors 'none'")
    return HTMLResponse(page, headers={"Content-Security-Policy": policy, "Cache-Control": "no-cache"})


def media_path(root: Path, requested: str) -> Path:
    """The file `requested` names under `root`, or NotFound when it is missing or would leave the folder."""
    missing = NotFound(f"no image {requested!r} under the thumbnail folder", code=ErrorCode.MEDIA_NOT_FOUND)
    relative = PurePosixPath(requested)
    if not requested or "\x00" in requested or "\\" in requested or relative.is_absolute() or ".." in relative.parts:
        raise missing
    try:
        folder = root.resolve(strict=True)
        target = (folder / relative).resolve(strict=True)  # symlinks followed: one out of the folder is refused
    except (OSError, RuntimeError):
        raise missing from None
    if not target.is_relative_to(folder) or not target.is_file():
        raise missing
    return target


def thumbnail(path: Path, limits: ImageLimits) -> bytes:
    """The image scaled to fit THUMBNAIL_PX (never up), as JPEG; refused like any uploaded image when over limits."""
    size = path.stat().st_size
    if size > limits.max_bytes:  # checked before reading: the file is not read to be refused
        raise PayloadTooLarge(f"image is {size} bytes; the limit is {limits.max_bytes}",
                              {"bytes": size, "max_bytes": limits.max_bytes})
    image = decode_image(path.read_bytes(), limits)
    image.thumbnail((THUMBNAIL_PX, THUMBNAIL_PX))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    return out.getvalue()


@router.get(MEDIA_URL + "/{requested:path}")
async def ui_media(requested: str, services: ServicesDep) -> Response:
    media = services.config.media
    if media.ui_media_dir is None:
        raise NotFound("thumbnails are off: set JEPA_UI_MEDIA_DIR to the folder the points' paths are relative to",
                       code=ErrorCode.MEDIA_NOT_FOUND)
    path = media_path(media.ui_media_dir, requested)
    data = await services.decode(thumbnail, path, media.image)  # the image limits, outside the decode budget
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=300"})


def install_ui(app: FastAPI) -> None:
    """The page, its thumbnails and its assets (public, like /docs/assets: service/api/auth.py)."""
    app.include_router(router)
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS_DIR), name="ui-assets")
