# Build a static binary, then run it as an unprivileged user on a minimal image.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/authproxy ./cmd/authproxy \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/authproxy /usr/local/bin/authproxy
COPY --from=build --chown=65532:65532 /out/data /data
ENV AUTHPROXY_DATA_DIR=/data \
    AUTHPROXY_LISTEN=:3128 \
    AUTHPROXY_ADMIN_LISTEN=:9090 \
    LOG_FORMAT=json
USER 65532:65532
VOLUME ["/data"]
EXPOSE 3128 9090
ENTRYPOINT ["/usr/local/bin/authproxy"]
