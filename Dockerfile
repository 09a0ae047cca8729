# Builds the docker-desktop bootstrap distro's root filesystem; export it
# to get what `wsl --import` takes:
#   docker build -t ddinit-distro . && docker export $(docker create ddinit-distro) > distro.tar
# `make distro` builds the same tree without Docker.
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/ddinit ./cmd/ddinit

FROM debian:bookworm AS assemble
RUN apt-get update && apt-get install -y --no-install-recommends busybox-static && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ddinit /src/bin/ddinit
COPY distro /src/distro
COPY scripts/mkdistro.sh /src/scripts/mkdistro.sh
RUN OUT=/out bash /src/scripts/mkdistro.sh && mkdir /rootfs && tar -C /rootfs -xf /out/distro.tar

FROM scratch
COPY --from=assemble /rootfs/ /
CMD ["/usr/bin/ddinit", "run", "--config", "/etc/ddinit/config.json"]
