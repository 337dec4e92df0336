# Tributary in a container. The build stage runs the same scripts/package that CI runs (a release
# binary with the Swift runtime linked statically, plus the console's files); the runtime stage
# is a plain Ubuntu with a non-root user. Not built on Tributary's CI machines (no container
# engine runs there); the script it calls is.
#
#   docker build -t tributary .
#   docker run -e TRIBUTARY_API_TOKENS=... -e DATABASE_URL=... -e ENCRYPTION_KEY=... -p 8000:8000 tributary
FROM swift:6.3-noble AS build
WORKDIR /src
COPY . .
RUN scripts/package /dist \
    && mkdir /out && tar -C /out -xzf /dist/tributary-*.tar.gz && mv /out/tributary-* /out/tributary

FROM ubuntu:24.04
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl tzdata \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tributary --create-home tributary
COPY --from=build /out/tributary /opt/tributary
USER tributary
# Listening on all interfaces needs TRIBUTARY_API_TOKENS (serve refuses otherwise).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    TRIBUTARY_DATA_DIR=/var/lib/tributary
VOLUME /var/lib/tributary
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/health || exit 1
STOPSIGNAL SIGTERM
ENTRYPOINT ["/opt/tributary/tributary"]
CMD ["serve"]
