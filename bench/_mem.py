"Peak-memory helpers shared by the benchmarks (Linux /proc): resident set size and its high-water mark."

def rss():
    "(current RSS, peak RSS since the last `reset_hwm`) of this process, in MiB."
    with open('/proc/self/status') as f: d = dict(l.split(':', 1) for l in f)
    return int(d['VmRSS'].split()[0]) / 1024, int(d['VmHWM'].split()[0]) / 1024

def reset_hwm():
    "Reset this process's peak-RSS high-water mark."
    with open('/proc/self/clear_refs', 'w') as f: f.write('5')
