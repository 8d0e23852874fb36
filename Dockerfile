FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY backout backout
COPY detectors detectors
COPY streams streams
COPY actions actions
RUN pip install --no-cache-dir '.[kubernetes]'
ENTRYPOINT ["backout"]
