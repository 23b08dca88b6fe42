"""The deployment files stay true to the code: the Dockerfile, env.example and settings."""

import ast
import re
import tomllib
from pathlib import Path

import pytest

from outcall.settings import Settings

ROOT = Path(__file__).parent.parent


def local_modules_imported_by(entry: str) -> set[str]:
    """Paths (relative to the repo) of every local module `entry` imports, transitively."""
    found, todo = set(), [entry]
    while todo:
        path = todo.pop()
        if path in found:
            continue
        found.add(path)
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            modules = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for module in modules:
                base = module.replace(".", "/")
                for candidate in (f"{base}.py", f"{base}/__init__.py"):
                    if (ROOT / candidate).is_file():
                        todo.append(candidate)
    return found


def not_copied(dockerfile: str, modules: set[str]) -> set[str]:
    sources = []
    for line in dockerfile.splitlines():
        if match := re.match(r"\s*COPY\s+(?:--\S+\s+)*(.+)\s+\S+\s*$", line):
            sources += [s.removeprefix("./").rstrip("/") for s in match.group(1).split()]
    return {m for m in modules if not any(m == s or m.startswith(s + "/") for s in sources)}


def test_the_dockerfile_copies_every_local_module_the_bot_imports():
    modules = local_modules_imported_by("bot.py")
    assert {"bot.py", "pipelines/default.py", "outcall/settings.py", "outcall/calls.py"} <= modules
    assert not_copied((ROOT / "Dockerfile").read_text(), modules) == set()


def test_the_dockerfile_check_notices_a_missing_copy():
    modules = local_modules_imported_by("bot.py")
    without_outcall = (ROOT / "Dockerfile").read_text().replace("COPY ./outcall outcall", "")
    assert "outcall/settings.py" in not_copied(without_outcall, modules)


def test_the_dockerfile_installs_from_the_lock_file():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.startswith("# ") and "FROM dailyco/pipecat-base" in dockerfile
    assert "uv sync --locked --no-dev" in dockerfile


def test_pcc_deploy_toml_has_what_pipecat_cloud_needs():
    config = tomllib.loads((ROOT / "pcc-deploy.toml").read_text())
    assert {"agent_name", "secret_set", "agent_profile", "scaling"} <= config.keys()


def test_env_example_lists_every_setting_with_a_comment():
    lines = (ROOT / "env.example").read_text().splitlines()
    documented = {}
    for previous, line in zip([""] + lines, lines):
        if match := re.match(r"^([A-Z_]+)=", line):
            documented[match.group(1)] = previous.startswith("# ")
    settings = {name.upper() for name in Settings.model_fields}
    assert settings == set(documented), "env.example and Settings disagree"
    assert all(documented.values()), [n for n, commented in documented.items() if not commented]


def test_local_server_url_is_an_alias_and_env_is_case_insensitive():
    settings = Settings(_env_file=None, LOCAL_SERVER_URL="https://x.ngrok.app/", ENV="Production",
                        AGENT_NAME="a", ORGANIZATION_NAME="o")
    assert settings.server_url == "https://x.ngrok.app"
    assert settings.is_production
    assert settings.pipecat_cloud_ws_url == "wss://api.pipecat.daily.co/ws/twilio"


def test_production_without_agent_or_organization_is_a_startup_error():
    from server import create_app

    with pytest.raises(RuntimeError, match="AGENT_NAME.*ORGANIZATION_NAME"):
        create_app(Settings(_env_file=None, env="production"))


def test_several_worker_processes_on_sqlite_is_a_startup_error():
    from server import create_app

    with pytest.raises(RuntimeError, match="WORKERS > 1 needs PostgreSQL"):
        create_app(Settings(_env_file=None, workers=2, database_url="sqlite+aiosqlite:///./x.db"))
    assert Settings(_env_file=None, workers=2, database_url="postgresql+asyncpg://db/outcall").startup_errors() == []


def test_missing_settings_name_the_features_they_disable():
    missing = dict(Settings(_env_file=None).missing_settings())
    assert "503" in missing["DIALOUT_API_KEY"]
    assert "TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN" in missing
    assert set(missing) >= {"STREAM_SECRET", "DEEPGRAM_API_KEY", "GOOGLE_API_KEY", "CARTESIA_API_KEY"}
