//! `raid1 examine`: the same report as `mdadm --examine`, as text or JSON.
