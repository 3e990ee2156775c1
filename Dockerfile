# The sigrun image: `sigrun work` (runner pods) and `sigrun operator` (the operator pod).
#
#   docker build -t sigrun:0.1.0 .
#
# Your job modules go into /app (on the runners' import path): copy them in a stage of your
# own `FROM sigrun:0.1.0`, or edit the COPY of examples/jobs below. The image runs as the
# non-root user 10001 and works with a read-only root filesystem (mount an emptyDir at /tmp),
# which is what the chart and the operator's runner pods do.

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY runner ./runner
COPY operator ./operator
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SIGRUN_PATH=/app
RUN groupadd --gid 10001 sigrun \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /app --shell /usr/sbin/nologin sigrun
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-compile /wheels/*.whl && rm -rf /wheels
WORKDIR /app
COPY examples/jobs ./jobs
USER 10001:10001
ENTRYPOINT ["sigrun"]
CMD ["work"]
