#!/usr/bin/env bash
# Install Apache Kafka 4.x (KRaft broker + CLI tools) as plain jars from Maven Central into
# $CACHE/kafka-<version>/libs, plus log4j2 configs. No Kafka tarball: only the registry is reachable.
# Writes $CACHE/kafka.env (KAFKA_VERSION, KAFKA_HOME) for kafka.sh. Idempotent: a marker file
# per version makes later runs a no-op.
#   KAFKA_VERSION=4.2.0 install-kafka.sh    # force one version (default: 4.3.1, then fallbacks)
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

M2="$CACHE/m2"       # private Maven repo, so the whole rig cache lives in one place
LOG4J=2.25.4         # the log4j2 that kafka-server 4.3.1 itself depends on
versions=("${KAFKA_VERSION:-4.3.1}")
[[ -n ${KAFKA_VERSION:-} ]] || versions+=(4.2.0 4.1.1)

write_configs() { # $1 = kafka home
  mkdir -p "$1/config"
  # Broker: INFO to a file in the run dir (-Dkafka.logs.dir), chatty loggers at WARN.
  cat >"$1/config/log4j2-server.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="${sys:kafka.logs.dir}/server.log" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="file"/></Root>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.clients" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="INFO"/>
  </Loggers>
</Configuration>
EOF
  # CLI tools (topics, console producer/consumer): WARN and above to stderr only.
  cat >"$1/config/log4j2-tools.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console>
  </Appenders>
  <Loggers><Root level="WARN"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
}

install_version() { # $1 = version; returns non-zero if Maven cannot resolve it
  local ver=$1 home="$CACHE/kafka-$1" work
  [[ -f $home/.installed ]] && return 0
  work="$CACHE/mvn-kafka-$ver"
  mkdir -p "$work"
  # kafka_2.13 = broker (kafka.Kafka, kafka.tools.StorageTool); kafka-tools = TopicCommand,
  # console producer/consumer. Kafka 4 logs through slf4j 1.7 (slf4j-api 1.7.36 in its tree) to
  # log4j2, but ships no binding in its poms: log4j-slf4j-impl is the slf4j-1.x one (the "slf4j2"
  # binding would be ignored by slf4j 1.7 and every log line dropped). log4j pinned to one version.
  cat >"$work/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.aliassync</groupId><artifactId>kafka-rig</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$ver</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$ver</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$home/libs"
  if ! mvn -B -q -f "$work/pom.xml" -Dmaven.repo.local="$M2" \
      org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$home/libs" >"$work/mvn.log" 2>&1; then
    note "Maven could not fetch Kafka $ver (log: $work/mvn.log)"
    tail_log "$work/mvn.log" 8
    return 1
  fi
  write_configs "$home"
  touch "$home/.installed"
}

for ver in "${versions[@]}"; do
  if install_version "$ver"; then
    env=$(printf 'KAFKA_VERSION=%s\nKAFKA_HOME=%s' "$ver" "$CACHE/kafka-$ver")
    [[ -f $CACHE/kafka.env && $(<"$CACHE/kafka.env") == "$env" ]] ||
      { echo "$env" >"$CACHE/kafka.env.tmp" && mv "$CACHE/kafka.env.tmp" "$CACHE/kafka.env"; }
    exit 0
  fi
done
die "no Kafka version could be installed (tried: ${versions[*]})"
