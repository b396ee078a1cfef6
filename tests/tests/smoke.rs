use shield_tests::{frames::*, kernel::*};

#[test]
fn loads_and_passes_sip() {
    let mut k = Kernel::load();
    let mut t = shield_tests::model::Tables::default();
    t.udp_ports.insert(5060);
    k.apply(&t);
    let o = k.run(&Frame::udp4([203, 0, 113, 7], 5060, &sip_request("INVITE", None)).build());
    assert_eq!(o.action, XDP_PASS);
}
