#!/usr/bin/env bash
# AWS's own EC2 instance metadata mock (github.com/aws/amazon-ec2-metadata-mock, pinned), built from the Go
# module proxy once into $CACHE/imds-mock-<version>/ec2-metadata-mock. The credential tests use it because
# moto's IMDS answers the IMDSv2 token request without the x-aws-ec2-metadata-token-ttl-seconds header that
# aws-config requires. Go: `go` on PATH, else /usr/local/go/bin/go.
#   install-imds-mock.sh          install if needed; prints nothing on success
#   install-imds-mock.sh --path   also print the binary's path
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

VERSION=v1.13.0
DIR="$CACHE/imds-mock-$VERSION"
BIN="$DIR/ec2-metadata-mock"

if ! [[ -x $BIN ]]; then
  GO=$(command -v go || true)
  [[ -n $GO ]] || GO=/usr/local/go/bin/go
  [[ -x $GO ]] || die "Go is needed to build the EC2 metadata mock (not on PATH nor at /usr/local/go/bin/go)"
  mkdir -p "$DIR"
  log="$CACHE/imds-mock-install.log"
  # GOBIN: the binary lands in the cache dir (a temp name first, so a half-built one is never taken as done).
  GOBIN="$DIR/.build" GOFLAGS=-mod=mod "$GO" install \
    "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@$VERSION" >"$log" 2>&1 ||
    { tail_log "$log"; die "EC2 metadata mock build failed (log: $log)"; }
  mv "$DIR/.build/ec2-metadata-mock" "$BIN"
  rmdir "$DIR/.build" 2>/dev/null || true
fi
[[ ${1:-} != --path ]] || echo "$BIN"
