//! The few `bpf(2)` commands aya 0.16 does not wrap: batched map updates and
//! lookups (bulk ban loads, entry counts, whole-map dumps), the XDP part of
//! `bpf_link_info` (which interface a pinned link is attached to), opening
//! a pin, and for the test tools loading a hand-assembled XDP program and
//! running a program with `BPF_PROG_TEST_RUN` (aya's test run has no
//! live-frames mode and takes only aya's programs).
//!
//! The attribute structs mirror `union bpf_attr` in `include/uapi/linux/bpf.h`
//! field for field; the kernel zero-extends a shorter attribute, so each
//! command passes only the struct it uses. This is the only copy of them.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_MAP_LOOKUP_ELEM: libc::c_int = 1;
const BPF_MAP_UPDATE_ELEM: libc::c_int = 2;
const BPF_MAP_GET_NEXT_KEY: libc::c_int = 4;
#[cfg(feature = "test-api")]
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_OBJ_GET: libc::c_int = 7;
#[cfg(feature = "test-api")]
const BPF_PROG_TEST_RUN: libc::c_int = 10;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_MAP_LOOKUP_BATCH: libc::c_int = 24;
const BPF_MAP_UPDATE_BATCH: libc::c_int = 26;
#[cfg(feature = "test-api")]
const BPF_LINK_CREATE: libc::c_int = 28;

/// The kernel-internal "operation not supported" (`ENOTSUPP`, not
/// `EOPNOTSUPP`) that leaks to user space for map types without batch ops.
const ENOTSUPP: i32 = 524;

/// `BPF_MAP_*_ELEM` / `BPF_MAP_GET_NEXT_KEY` attributes.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value_or_next_key: u64,
    flags: u64,
}

/// `BPF_MAP_*_BATCH` attributes (`attr.batch`).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `BPF_OBJ_GET` attributes.
#[repr(C)]
#[derive(Default)]
struct ObjAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

/// `BPF_OBJ_GET_INFO_BY_FD` attributes (`attr.info`).
#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

#[cfg(feature = "test-api")]
/// `BPF_PROG_LOAD` attributes, up to the fields a plain XDP program needs.
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
}

#[cfg(feature = "test-api")]
/// `BPF_LINK_CREATE` attributes, up to the flags (all an XDP link takes).
#[repr(C)]
#[derive(Default)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
}

#[cfg(feature = "test-api")]
/// `BPF_PROG_TEST_RUN` attributes (`attr.test`).
#[repr(C)]
#[derive(Default)]
struct TestRunAttr {
    prog_fd: u32,
    retval: u32,
    data_size_in: u32,
    data_size_out: u32,
    data_in: u64,
    data_out: u64,
    repeat: u32,
    duration: u32,
    ctx_size_in: u32,
    ctx_size_out: u32,
    ctx_in: u64,
    ctx_out: u64,
    flags: u32,
    cpu: u32,
    batch_size: u32,
    _pad: u32,
}

fn bpf<T>(cmd: libc::c_int, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, correctly laid out attribute struct for `cmd`;
    // the pointers inside it point at buffers the caller keeps alive.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// True for the errors a kernel gives for a batch command it (or this map
/// type) does not implement: fall back to one element at a time.
pub fn batch_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(ENOTSUPP) | Some(libc::EOPNOTSUPP)
    )
}

/// One `BPF_MAP_LOOKUP_ELEM` into `value`; `false` if the key is absent.
pub fn lookup_elem(map: BorrowedFd<'_>, key: &[u8], value: &mut [u8]) -> io::Result<bool> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_mut_ptr() as u64,
        ..Default::default()
    };
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// One `BPF_MAP_UPDATE_ELEM` (flags `BPF_ANY`).
pub fn update_elem(map: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.as_raw_fd() as u32,
        key: key.as_ptr() as u64,
        value_or_next_key: value.as_ptr() as u64,
        ..Default::default()
    };
    bpf(BPF_MAP_UPDATE_ELEM, &mut attr).map(drop)
}

/// `BPF_MAP_UPDATE_BATCH` of `keys.len() / key_size` elements; `values`
/// holds as many values, back to back. Returns how many the kernel wrote:
/// on error, the elements before the failing one are in the map.
pub fn update_batch(
    map: BorrowedFd<'_>,
    keys: &[u8],
    values: &[u8],
    count: usize,
) -> Result<(), (usize, io::Error)> {
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: count as u32,
        map_fd: map.as_raw_fd() as u32,
        ..Default::default()
    };
    match bpf(BPF_MAP_UPDATE_BATCH, &mut attr) {
        Ok(_) => Ok(()),
        Err(e) => Err((attr.count as usize, e)),
    }
}

/// Reads a whole hash map with `BPF_MAP_LOOKUP_BATCH`, `chunk` entries per
/// call, handing each (key, value) to `each`. Returns `Err` with the batch
/// error when the map type has no batch lookup (see [`batch_unsupported`]).
pub fn lookup_all_batch(
    map: BorrowedFd<'_>,
    key_size: usize,
    value_size: usize,
    chunk: usize,
    mut each: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let mut keys = vec![0u8; key_size * chunk];
    let mut values = vec![0u8; value_size * chunk];
    // The batch cursor is map-specific (a bucket index for hash maps) but
    // never larger than a key.
    let mut token = vec![0u8; key_size.max(8)];
    let mut first = true;
    loop {
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { token.as_ptr() as u64 },
            out_batch: token.as_mut_ptr() as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map.as_raw_fd() as u32,
            ..Default::default()
        };
        let res = bpf(BPF_MAP_LOOKUP_BATCH, &mut attr);
        // ENOENT: this was the last chunk (possibly with entries in it).
        let done = match &res {
            Ok(_) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(_) => return res.map(drop),
        };
        for i in 0..attr.count as usize {
            each(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            );
        }
        if done {
            return Ok(());
        }
        first = false;
    }
}

/// Walks every key with `BPF_MAP_GET_NEXT_KEY` (any map type but arrays
/// answers it; slower than a batch lookup: one syscall per key).
pub fn for_each_key(
    map: BorrowedFd<'_>,
    key_size: usize,
    mut each: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut cur = vec![0u8; key_size];
    let mut next = vec![0u8; key_size];
    let mut first = true;
    loop {
        let mut attr = ElemAttr {
            map_fd: map.as_raw_fd() as u32,
            key: if first { 0 } else { cur.as_ptr() as u64 },
            value_or_next_key: next.as_mut_ptr() as u64,
            ..Default::default()
        };
        match bpf(BPF_MAP_GET_NEXT_KEY, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(e),
        }
        each(&next);
        std::mem::swap(&mut cur, &mut next);
        first = false;
    }
}

/// Opens a pinned object (`BPF_OBJ_GET`).
pub fn obj_get(path: &Path) -> io::Result<OwnedFd> {
    let c = path_cstr(path)?;
    let mut attr = ObjAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(feature = "test-api")]
/// `BPF_PROG_TYPE_XDP`.
const BPF_PROG_TYPE_XDP: u32 = 6;

#[cfg(feature = "test-api")]
/// Loads `insns` (eBPF instructions, one `u64` each) as a GPL XDP program;
/// on failure the error carries the verifier's log.
pub fn prog_load_xdp(insns: &[u64]) -> io::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let end = log.iter().position(|&b| b == 0).unwrap_or(0);
        io::Error::new(
            e.kind(),
            format!(
                "BPF_PROG_LOAD: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            ),
        )
    })?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(feature = "test-api")]
/// `BPF_F_TEST_XDP_LIVE_FRAMES` (Linux 5.18): frames the program returns
/// `XDP_TX` / `XDP_REDIRECT` for are really sent.
pub const BPF_F_TEST_XDP_LIVE_FRAMES: u32 = 1 << 1;

#[cfg(feature = "test-api")]
/// One `BPF_PROG_TEST_RUN`: `data` run `repeat` times (0 counts as 1).
#[derive(Clone, Copy, Debug, Default)]
pub struct TestRun<'a> {
    pub data: &'a [u8],
    /// The context (`struct xdp_md` for XDP), if the run needs one.
    pub ctx: Option<&'a [u8]>,
    pub repeat: u32,
    /// `BPF_F_TEST_*`.
    pub flags: u32,
    /// Frames per batch in live-frames mode (0: the kernel's default).
    pub batch_size: u32,
}

#[cfg(feature = "test-api")]
/// What the kernel reports of a [`TestRun`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestRunResult {
    /// The program's return value (the XDP action).
    pub retval: u32,
    /// Mean ns per run, as the kernel timed it.
    pub duration_ns: u32,
}

#[cfg(feature = "test-api")]
/// Runs `prog` on a frame with `BPF_PROG_TEST_RUN`.
pub fn prog_test_run(prog: BorrowedFd<'_>, run: &TestRun<'_>) -> io::Result<TestRunResult> {
    let ctx = run.ctx.unwrap_or_default();
    let mut attr = TestRunAttr {
        prog_fd: prog.as_raw_fd() as u32,
        data_size_in: run.data.len() as u32,
        data_in: run.data.as_ptr() as u64,
        repeat: run.repeat,
        ctx_size_in: ctx.len() as u32,
        ctx_in: if ctx.is_empty() {
            0
        } else {
            ctx.as_ptr() as u64
        },
        flags: run.flags,
        batch_size: run.batch_size,
        ..Default::default()
    };
    bpf(BPF_PROG_TEST_RUN, &mut attr)?;
    Ok(TestRunResult {
        retval: attr.retval,
        duration_ns: attr.duration,
    })
}

#[cfg(feature = "test-api")]
/// `BPF_XDP`, the attach type of an XDP link.
const BPF_XDP: u32 = 37;
/// `XDP_FLAGS_DRV_MODE`: native XDP, in the driver; refused where the
/// driver has none.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

#[cfg(feature = "test-api")]
/// Attaches an XDP program to `ifindex` with a bpf_link (Linux 5.9): it is
/// detached when the returned fd closes, so a test tool that dies leaves
/// nothing behind.
pub fn link_create_xdp(prog: BorrowedFd<'_>, ifindex: u32, flags: u32) -> io::Result<OwnedFd> {
    let mut attr = LinkCreateAttr {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags,
    };
    let fd = bpf(BPF_LINK_CREATE, &mut attr)?;
    // SAFETY: the kernel returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `path` as the C string a syscall takes.
pub(super) fn path_cstr(path: &Path) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// What `BPF_OBJ_GET_INFO_BY_FD` says about an XDP link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpLinkInfo {
    pub link_id: u32,
    pub prog_id: u32,
    /// 0 once the interface is gone (the link is then defunct).
    pub ifindex: u32,
}

/// `BPF_LINK_TYPE_XDP`.
const BPF_LINK_TYPE_XDP: u32 = 6;

/// `BPF_LINK_TYPE_TCX`.
const BPF_LINK_TYPE_TCX: u32 = 11;

/// Reads `struct bpf_link_info` of an XDP link. `Ok(None)` for another
/// kind of link.
pub fn xdp_link_info(link: BorrowedFd<'_>) -> io::Result<Option<XdpLinkInfo>> {
    link_info(link, BPF_LINK_TYPE_XDP)
}

/// Reads `struct bpf_link_info` of a tcx link (`tcx.ifindex` is where
/// `xdp.ifindex` is). `Ok(None)` for another kind of link.
pub fn tcx_link_info(link: BorrowedFd<'_>) -> io::Result<Option<XdpLinkInfo>> {
    link_info(link, BPF_LINK_TYPE_TCX)
}

fn link_info(link: BorrowedFd<'_>, kind: u32) -> io::Result<Option<XdpLinkInfo>> {
    // struct bpf_link_info { __u32 type; __u32 id; __u32 prog_id; union
    // { ... struct { __u32 ifindex; } xdp; ... } } — the union is 8-byte
    // aligned (it has __aligned_u64 members), so `xdp.ifindex` is at byte
    // 16. A zeroed buffer larger than the kernel's struct is accepted.
    let mut buf = [0u8; 128];
    let mut attr = InfoAttr {
        bpf_fd: link.as_raw_fd() as u32,
        info_len: buf.len() as u32,
        info: buf.as_mut_ptr() as u64,
    };
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let word = |i: usize| u32::from_ne_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    if word(0) != kind {
        return Ok(None);
    }
    Ok(Some(XdpLinkInfo {
        link_id: word(4),
        prog_id: word(8),
        ifindex: word(16),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_layouts_match_the_uapi() {
        assert_eq!(std::mem::size_of::<ElemAttr>(), 32);
        assert_eq!(std::mem::size_of::<BatchAttr>(), 56);
        assert_eq!(std::mem::offset_of!(BatchAttr, count), 32);
        assert_eq!(std::mem::offset_of!(BatchAttr, map_fd), 36);
        assert_eq!(std::mem::size_of::<InfoAttr>(), 16);
        assert_eq!(std::mem::size_of::<ProgLoadAttr>(), 48);
        assert_eq!(std::mem::size_of::<TestRunAttr>(), 80);
        assert_eq!(std::mem::size_of::<LinkCreateAttr>(), 16);
        assert_eq!(std::mem::offset_of!(TestRunAttr, flags), 64);
    }

    #[test]
    fn unsupported_errors() {
        assert!(batch_unsupported(&io::Error::from_raw_os_error(ENOTSUPP)));
        assert!(batch_unsupported(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
        assert!(!batch_unsupported(&io::Error::from_raw_os_error(
            libc::E2BIG
        )));
    }
}
