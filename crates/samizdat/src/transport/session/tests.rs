use super::*;
use wire::tunnel::mux::MuxConfig;

#[test]
fn a_stream_has_at_most_one_window_queued() {
    let mut st = State {
        mux: Mux::new(
            Role::Server,
            MuxConfig {
                window: 4 * INITIAL_WINDOW,
                max_streams: 8,
            },
        ),
        slots: HashMap::new(),
        control: VecDeque::new(),
        windows: HashMap::new(),
        data_ready: VecDeque::new(),
        pong: None,
        incoming: None,
        closed: false,
    };
    let open = Frame::Open {
        stream: 1,
        dest: Destination::Addr(([127, 0, 0, 1], 9).into()),
        first: &[],
    };
    st.mux.handle(open).unwrap();
    // The top-up to the larger window, then three grants of reading.
    assert!(st.consumed(1, 0));
    let mut granted = 3 * INITIAL_WINDOW;
    for _ in 0..3 {
        let before = st.windows[&1];
        st.consumed(1, INITIAL_WINDOW as usize);
        granted += st.windows[&1] - before;
    }
    assert_eq!(st.control.len(), 1, "one WINDOW queued for the stream");
    let (c, credit) = st.pop_control().unwrap();
    assert!(matches!(c, Control::Window { stream: 1 }));
    assert_eq!(credit, granted, "it carries all the credit");
    assert_eq!(granted, 6 * INITIAL_WINDOW);
    assert!(st.windows.is_empty());
}
