"""Summary of one Prometheus histogram in a /metrics scrape, for the benchmark scripts."""
import re


def hist(text, name):
    """(count, mean, p50, p99) of histogram `name`; the quantiles are bucket upper bounds."""
    buckets = [(float(le), float(v)) for le, v in re.findall(name + r'_bucket\{le="([^"]+)"\} (\S+)', text)]
    count = float(re.search(name + r"_count (\S+)", text).group(1))
    total = float(re.search(name + r"_sum (\S+)", text).group(1))
    q = lambda p: next(le for le, c in buckets if c >= p * count)
    return count, total / max(count, 1), q(0.5), q(0.99)
