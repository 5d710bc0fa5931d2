//! I5: the projected state is a function of the set of events.

use ledger_core::{Event, Projection};
use proptest::prelude::*;

use crate::histories::{Op, Step, run};

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0..3usize).prop_map(|family| Op::Login { family }),
        6 => (0..3usize, prop_oneof![3 => Just(0u64), 1 => Just(1u64), 1 => 2..4u64])
            .prop_map(|(family, back)| Op::Refresh { family, back }),
        1 => (0..3usize).prop_map(|family| Op::Revoke { family }),
        1 => Just(Op::RevokeSubject),
        3 => Just(Op::Sync),
    ]
}

fn steps() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(
        (op(), 0..2usize, prop_oneof![Just(0u64), 0..8u64, 0..700u64]).prop_map(
            |(op, instance, advance_secs)| Step {
                op,
                instance,
                advance_secs,
            },
        ),
        1..60,
    )
}

fn project(events: &[Event]) -> Projection {
    let mut p = Projection::new();
    for e in events {
        p.apply(e);
    }
    p
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn any_order_any_duplicates_same_state(
        steps in steps(),
        seed in any::<u64>(),
        dup_every in 1..5usize,
    ) {
        let events = run(&steps);
        let live = project(&events);

        // Shuffle deterministically from the seed, then duplicate some events.
        let mut shuffled: Vec<Event> = events.clone();
        let mut state = seed | 1;
        for i in (1..shuffled.len()).rev() {
            state ^= state << 13; state ^= state >> 7; state ^= state << 17;
            let j = usize::try_from(state % (i as u64 + 1)).unwrap();
            shuffled.swap(i, j);
        }
        let duplicates: Vec<Event> = shuffled.iter().step_by(dup_every).cloned().collect();
        shuffled.extend(duplicates);
        let replayed = project(&shuffled);
        prop_assert_eq!(live.digest(), replayed.digest());
        prop_assert_eq!(&live, &replayed);

        // Merging two halves built apart (two regions) gives the same state.
        let (a, b) = shuffled.split_at(shuffled.len() / 2);
        let mut merged = project(a);
        merged.merge(&project(b));
        prop_assert_eq!(live.digest(), merged.digest());
    }
}

#[test]
fn digest_changes_when_state_changes() {
    let steps = vec![
        Step {
            op: Op::Login { family: 0 },
            instance: 0,
            advance_secs: 0,
        },
        Step {
            op: Op::Refresh { family: 0, back: 0 },
            instance: 0,
            advance_secs: 10,
        },
    ];
    let events = run(&steps);
    assert_eq!(events.len(), 2);
    assert_ne!(project(&events[..1]).digest(), project(&events).digest());
}
