# The bot, for Pipecat Cloud. The base image runs bot.py's `bot()` for each session.
FROM dailyco/pipecat-base:latest-py3.11

ENV UV_COMPILE_BYTECODE=1
ENV UV_LINK_MODE=copy

# Dependencies from the lock file only: the image has exactly what the tests ran with.
RUN --mount=type=cache,target=/root/.cache/uv \
    --mount=type=bind,source=uv.lock,target=uv.lock \
    --mount=type=bind,source=pyproject.toml,target=pyproject.toml \
    uv sync --locked --no-dev

# Every local module bot.py imports (tests/test_deploy_files.py checks this list).
COPY ./bot.py bot.py
COPY ./pipelines pipelines
COPY ./outcall outcall
