"""Kafka's Java partitioner, really run on a JVM: which partition the Java client picks for a key.

Tests compare it with where records land (aiokafka's murmur2 must agree with the Java client,
or a Java producer and this project would split one device across two partitions). The tiny
program is compiled once against the kafka-clients jar of the stack and cached under
`.stack/java/`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from .kafka import ensure_libs, java_bin, kafka_clients_jar
from .paths import StackConfig
from .process import StackError, stack_lock

CLASS_NAME = "Murmur2Partition"
JAVA_SOURCE = """\
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.util.HexFormat;
import org.apache.kafka.common.utils.Utils;

/** Reads one hex-encoded key per line; prints the partition the Java client's
 *  built-in partitioner gives it: Utils.toPositive(Utils.murmur2(key)) % n. */
public class Murmur2Partition {
    public static void main(String[] args) throws Exception {
        int n = Integer.parseInt(args[0]);
        HexFormat hex = HexFormat.of();
        BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.US_ASCII));
        StringBuilder out = new StringBuilder();
        String line;
        while ((line = in.readLine()) != null) {
            byte[] key = hex.parseHex(line.trim());
            out.append(Utils.toPositive(Utils.murmur2(key)) % n).append('\\n');
        }
        System.out.print(out);
    }
}
"""


def _javac() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and Path(home, "bin", "javac").is_file():
        return str(Path(home, "bin", "javac"))
    found = shutil.which("javac")
    if not found:
        raise StackError("javac is missing (a JDK is needed to run the Java partitioner): "
                         "apt-get install -y default-jdk-headless")
    return found


def compiled_class_dir(cfg: StackConfig | None = None) -> tuple[Path, Path]:
    """(folder holding the compiled class, kafka-clients jar); compiles on first use."""
    cfg = cfg or StackConfig.from_env()
    with stack_lock(cfg.lock_file):
        ensure_libs(cfg)
        jar = kafka_clients_jar(cfg)
        digest = hashlib.sha256(JAVA_SOURCE.encode() + jar.name.encode()).hexdigest()[:12]
        out = cfg.java_dir / f"murmur2-{digest}"
        if not (out / f"{CLASS_NAME}.class").is_file():
            out.mkdir(parents=True, exist_ok=True)
            source = out / f"{CLASS_NAME}.java"
            source.write_text(JAVA_SOURCE)
            result = subprocess.run([_javac(), "-cp", str(jar), "-d", str(out), str(source)],
                                    capture_output=True, text=True, stdin=subprocess.DEVNULL)
            if result.returncode != 0:
                raise StackError(f"javac {source} failed:\n{result.stdout}{result.stderr}")
        return out, jar


def java_partitions(keys: Sequence[bytes], partitions: int, cfg: StackConfig | None = None) -> list[int]:
    """The partition the Kafka Java client picks for each key (one JVM run for all keys)."""
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    class_dir, jar = compiled_class_dir(cfg)
    # kafka-clients' Utils logs through slf4j-api (no binding: slf4j falls back to no-op).
    slf4j = sorted(jar.parent.glob("slf4j-api-*.jar"))
    classpath = os.pathsep.join(str(p) for p in [class_dir, jar, *slf4j])
    result = subprocess.run(
        [java_bin(), "-Xshare:auto", "-cp", classpath, CLASS_NAME, str(partitions)],
        input="".join(key.hex() + "\n" for key in keys), capture_output=True, text=True,
    )
    if result.returncode != 0:
        raise StackError(f"the Java partitioner failed:\n{result.stdout}{result.stderr}")
    answer = [int(line) for line in result.stdout.split()]
    if len(answer) != len(keys):
        raise StackError(f"the Java partitioner answered {len(answer)} partitions for {len(keys)} keys")
    return answer
