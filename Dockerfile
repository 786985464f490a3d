# Multi-stage build: a static meshlens binary on an empty base, run as an
# unprivileged user, data in the /data volume.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.Version=${VERSION}" -o /out/meshlens ./cmd/meshlens \
 && mkdir -p /out/data

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/meshlens /meshlens
COPY --from=build --chown=65534:65534 /out/data /data
USER 65534:65534
VOLUME ["/data"]
EXPOSE 9201
ENTRYPOINT ["/meshlens", "--listen=0.0.0.0:9201", "--data-dir=/data"]
