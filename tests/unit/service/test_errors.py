"""The error table: one status per code, classes that cannot disagree with their code, docs that are current."""


import pytest

from service.errors import (
    EngineFailure,
    ErrorCode,
    InvalidInput,
    NotFound,
    StorageError,
    StorageUnavailable,
    UnprocessableInput,
    markdown_table,
    meanings_by_status,
)
from tests.support.paths import DOCS, SERVICE

DOC = DOCS / "errors.md"


def test_codes_are_unique_and_statuses_are_http_error_statuses():
    assert len({code.value for code in ErrorCode}) == len(ErrorCode)
    assert all(400 <= code.status < 600 and code.meaning for code in ErrorCode)


def test_a_code_of_another_status_is_refused():
    assert InvalidInput("bad", code=ErrorCode.INVALID_IMAGE).status == 400
    with pytest.raises(TypeError, match="invalid_action"):
        InvalidInput("bad", code=ErrorCode.INVALID_ACTION)  # a 422 code on a 400 class


def test_default_codes_and_string_codes():
    assert UnprocessableInput("x").code is ErrorCode.VALIDATION_ERROR
    assert NotFound("x", code="point_not_found").code is ErrorCode.POINT_NOT_FOUND
    with pytest.raises(ValueError, match="no_such_code"):
        NotFound("x", code="no_such_code")
    assert EngineFailure("x").status == 500


def test_storage_outage_and_disk_refusal_are_two_codes():
    assert (StorageUnavailable("x").status, StorageUnavailable("x").code.value) == (503, "storage_unavailable")
    assert (StorageError("x").status, StorageError("x").code.value) == (507, "storage_error")


def test_framework_statuses_get_their_generic_code():
    assert ErrorCode.for_http_status(404) is ErrorCode.NOT_FOUND
    assert ErrorCode.for_http_status(405) is ErrorCode.METHOD_NOT_ALLOWED
    assert ErrorCode.for_http_status(418) is ErrorCode.BAD_REQUEST
    assert ErrorCode.for_http_status(502) is ErrorCode.INTERNAL_ERROR


def test_openapi_meanings_list_every_code_of_the_status():
    meanings = meanings_by_status()
    assert "`storage_unavailable`" in meanings[503] and "`not_ready`" in meanings[503]
    assert set(meanings) == {code.status for code in ErrorCode}


def test_the_docs_table_is_generated_from_the_enum():
    assert DOC.read_text() == markdown_table(), "regenerate: .venv/bin/python -m service.errors > docs/errors.md"


def _raise_sites():
    """(file, line, exception class, code member) for every `SomeError(..., code=ErrorCode.X)` in service/."""
    import ast

    from service import errors

    root = SERVICE
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            cls = getattr(errors, node.func.id, None)
            if not (isinstance(cls, type) and issubclass(cls, errors.ServiceError)):
                continue
            for keyword in node.keywords:
                if keyword.arg == "code":
                    yield path.name, node.lineno, cls, keyword.value


def test_every_raise_site_names_a_code_of_its_class_status():
    sites = list(_raise_sites())
    assert len(sites) > 30
    for name, line, cls, value in sites:
        assert (value.value.id, type(value).__name__) == ("ErrorCode", "Attribute"), f"{name}:{line}: not a table code"
        code = ErrorCode[value.attr]
        assert code.status == cls.default_code.status, f"{name}:{line}: {cls.__name__} with {code.value}"
