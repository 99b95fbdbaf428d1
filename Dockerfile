# kpi-exporter container image.
#   docker build -t kpi-exporter:0.1.0 .
#   docker run -p 4317:4317 -p 4318:4318 -p 9464:9464 -v kpi-exporter-data:/var/lib/kpi-exporter kpi-exporter:0.1.0
# docs/deployment.md has the details (config, salt, Kubernetes).

FROM python:3.11-slim AS build
WORKDIR /src
# only what the package is built from: a change to tests or docs does not rebuild the layer
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN python -m venv /opt/kpi-exporter \
 && /opt/kpi-exporter/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM python:3.11-slim
COPY --from=build /opt/kpi-exporter /opt/kpi-exporter
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/kpi-exporter \
        --shell /usr/sbin/nologin kpi-exporter \
 && install -d -o kpi-exporter -g kpi-exporter -m 0700 /var/lib/kpi-exporter \
 && install -d -m 0755 /etc/kpi-exporter
ENV PATH=/opt/kpi-exporter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    KPI_EXPORTER_STATE_DIR=/var/lib/kpi-exporter
USER 10001:10001
# counts and window sketches are snapshotted here: mount a volume to keep them across restarts
VOLUME ["/var/lib/kpi-exporter"]
EXPOSE 4317 4318 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/-/healthy', timeout=3)"]
ENTRYPOINT ["kpi-exporter"]
# mount a config at /etc/kpi-exporter/config.yaml and add: --config /etc/kpi-exporter/config.yaml
CMD ["serve"]
