//! Resource accounting for the benchmark.
//!
//! * **Kamailio CPU**: user + system time of every process in Kamailio's
//!   process group (the main process and its forked workers), from
//!   `/proc/<pid>/stat`.
//! * **SBC softirq CPU**: the `softirq` column of `/proc/stat`, summed over
//!   all CPUs. Softirq time is host-wide, not per namespace: in this lab it
//!   is the receive path of every packet that crosses a veth — above all the
//!   flood's processing on the SBC side (XDP, or the IP/UDP stack and
//!   netfilter), plus the much smaller receive of the SBC's replies on the
//!   outside hosts. A veth delivers on the CPU of the sender, so the flood's
//!   receive work is accounted there as softirq; the sender's own share
//!   (the syscall and the transmit) is system time of the flood process and
//!   is not counted. The benchmark subtracts the softirq time of a run with
//!   the same legitimate traffic and no flood, so the figure is what the
//!   flood costs the host under that defence.
//! * The kernel here accounts CPU time by sampling at each tick
//!   (CONFIG_TICK_CPU_ACCOUNTING, 250 Hz, no IRQ-time accounting): a run of
//!   several seconds on two CPUs gives thousands of samples.
//! * **Packet fates**: UDP counters of the SBC's namespace
//!   (`/proc/thread-self/net/snmp` read from a thread inside it) and the
//!   per-CPU backlog drops of `/proc/net/softnet_stat`; any counter of
//!   the namespace's snmp, netstat and snmp6 ([`net_counters`]).

use std::collections::HashMap;
use std::time::Instant;

use crate::netns::Netns;

/// Clock ticks per second of the /proc CPU counters.
pub fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// `/proc/stat` totals over all CPUs, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct HostCpu {
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    pub softirq: u64,
    pub irq: u64,
    pub steal: u64,
    pub at: Option<Instant>,
}

impl HostCpu {
    pub fn read() -> HostCpu {
        let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut h = HostCpu {
            at: Some(Instant::now()),
            ..HostCpu::default()
        };
        for line in text
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
        {
            let f: Vec<u64> = line
                .split_whitespace()
                .skip(1)
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 8 {
                h.user += f[0] + f[1];
                h.system += f[2];
                h.idle += f[3] + f[4];
                h.irq += f[5];
                h.softirq += f[6];
                h.steal += f[7];
            }
        }
        h
    }

    /// Seconds of softirq CPU between `self` (earlier) and `later`.
    pub fn softirq_secs(&self, later: &HostCpu) -> f64 {
        later.softirq.saturating_sub(self.softirq) as f64 / ticks_per_second()
    }

    /// Seconds of all non-idle CPU between the two.
    pub fn busy_secs(&self, later: &HostCpu) -> f64 {
        let busy = |h: &HostCpu| h.user + h.system + h.irq + h.softirq + h.steal;
        busy(later).saturating_sub(busy(self)) as f64 / ticks_per_second()
    }
}

/// CPU time of every process in one process group, in ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessGroupCpu {
    pub ticks: u64,
    pub processes: usize,
}

impl ProcessGroupCpu {
    pub fn read(pgid: u32) -> ProcessGroupCpu {
        let mut out = ProcessGroupCpu::default();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return out;
        };
        for e in dir.flatten() {
            let name = e.file_name();
            let Some(pid) = name.to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some((pgrp, ticks)) = process_ticks(pid) {
                if pgrp == pgid {
                    out.ticks += ticks;
                    out.processes += 1;
                }
            }
        }
        out
    }

    pub fn secs_since(&self, earlier: &ProcessGroupCpu) -> f64 {
        self.ticks.saturating_sub(earlier.ticks) as f64 / ticks_per_second()
    }
}

/// (process group, utime + stime) of one process.
pub fn process_ticks(pid: u32) -> Option<(u32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start
    // after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] = state (field 3), f[2] = pgrp (5), f[11] = utime (14), f[12] = stime (15)
    let pgrp = f.get(2)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some((pgrp, utime + stime))
}

/// The UDP line of `/proc/net/snmp` in a namespace.
#[derive(Clone, Copy, Debug, Default)]
pub struct UdpCounters {
    pub in_datagrams: u64,
    pub no_ports: u64,
    pub in_errors: u64,
    pub rcvbuf_errors: u64,
}

impl UdpCounters {
    pub fn read(ns: &Netns) -> UdpCounters {
        let text =
            ns.run(|| std::fs::read_to_string("/proc/thread-self/net/snmp").unwrap_or_default());
        parse_udp(&text)
    }

    pub fn since(&self, earlier: &UdpCounters) -> UdpCounters {
        UdpCounters {
            in_datagrams: self.in_datagrams.saturating_sub(earlier.in_datagrams),
            no_ports: self.no_ports.saturating_sub(earlier.no_ports),
            in_errors: self.in_errors.saturating_sub(earlier.in_errors),
            rcvbuf_errors: self.rcvbuf_errors.saturating_sub(earlier.rcvbuf_errors),
        }
    }
}

fn parse_udp(text: &str) -> UdpCounters {
    let c = parse_counters(text);
    let get = |name: &str| c.get(&format!("Udp:{name}")).copied().unwrap_or(0);
    UdpCounters {
        in_datagrams: get("InDatagrams"),
        no_ports: get("NoPorts"),
        in_errors: get("InErrors"),
        rcvbuf_errors: get("RcvbufErrors"),
    }
}

/// Every counter of `/proc/net/snmp`, `/proc/net/netstat` and
/// `/proc/net/snmp6` in a namespace: `Udp:InCsumErrors`,
/// `IpExt:InCsumErrors`, `Udp6InCsumErrors` and so on.
pub fn net_counters(ns: &Netns) -> HashMap<String, u64> {
    let text = ns.run(|| {
        ["snmp", "netstat", "snmp6"]
            .iter()
            .map(|f| {
                std::fs::read_to_string(format!("/proc/thread-self/net/{f}")).unwrap_or_default()
            })
            .collect::<String>()
    });
    parse_counters(&text)
}

/// `Proto: names` / `Proto: values` line pairs (snmp, netstat) as
/// `Proto:name`, and `name value` lines (snmp6) as they are.
fn parse_counters(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some((proto, names)) = line.split_once(": ") {
            let Some(values) = lines.next_if(|l| l.starts_with(&format!("{proto}: "))) else {
                continue;
            };
            let values = values.split_whitespace().skip(1);
            for (n, v) in names.split_whitespace().zip(values) {
                out.insert(format!("{proto}:{n}"), v.parse().unwrap_or(0));
            }
        } else if let Some((n, v)) = line.split_once(char::is_whitespace) {
            out.insert(n.to_string(), v.trim().parse().unwrap_or(0));
        }
    }
    out
}

/// Packets dropped because a CPU's input backlog was full (host-wide).
pub fn backlog_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_udp_line() {
        let t = "Ip: a b\nIp: 1 2\nUdp: InDatagrams NoPorts InErrors OutDatagrams RcvbufErrors SndbufErrors\n\
                 Udp: 10 2 7 5 6 0\nUdpLite: InDatagrams\nUdpLite: 0\n";
        let u = parse_udp(t);
        assert_eq!(
            (u.in_datagrams, u.no_ports, u.in_errors, u.rcvbuf_errors),
            (10, 2, 7, 6)
        );
    }

    #[test]
    fn reads_snmp_netstat_and_snmp6_counters() {
        let t =
            "IpExt: InNoRoutes InCsumErrors\nIpExt: 0 3\nUdp: InDatagrams InCsumErrors\nUdp: 9 1\n\
                 Udp6InDatagrams                 \t12\nUdp6InCsumErrors                \t4\n";
        let c = parse_counters(t);
        assert_eq!(c["IpExt:InCsumErrors"], 3);
        assert_eq!(c["Udp:InCsumErrors"], 1);
        assert_eq!(c["Udp6InDatagrams"], 12);
        assert_eq!(c["Udp6InCsumErrors"], 4);
    }

    #[test]
    fn reads_this_process() {
        let (pgrp, _) = process_ticks(std::process::id()).expect("own stat");
        // SAFETY: getpgrp has no preconditions.
        assert_eq!(pgrp, unsafe { libc::getpgrp() } as u32);
        assert!(HostCpu::read().idle > 0);
    }
}
