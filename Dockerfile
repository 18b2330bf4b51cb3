# The one image of the stack: worker, beat, flower and the one-shot migrate all run it
# (docker-compose.yml). The project is installed in place (pip install -e) so Alembic finds
# migrations/ next to the code, exactly as in a checkout.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 aicmo \
    && mkdir -p /data/artifacts \
    && chown -R aicmo /data

WORKDIR /app
COPY pyproject.toml README.md beat_schedule.py alembic.ini ./
COPY aicmo ./aicmo
COPY tasks ./tasks
COPY migrations ./migrations
RUN pip install -e .

USER aicmo
ENV AICMO_ARTIFACT_DIR=/data/artifacts
CMD ["aicmo", "--help"]
