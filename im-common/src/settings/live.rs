//! Settings that may change while the process runs: the module that reads them holds a
//! [`Live`] and reads it where it applies them (per request, per connection), and whoever
//! reloads them (the admin service's hot reload) holds the [`Reload`]. A reload that would
//! change a setting only a restart applies is refused, naming it, and so is one that fails the
//! settings' own validation: what runs is always valid.

use std::sync::Arc;

use tokio::sync::watch;

use super::SettingsError;

/// Settings that can be reloaded.
pub trait Reloadable: Clone + PartialEq + Send + Sync + 'static {
    /// Refuses `next` if it changes a setting that only a restart applies (naming it) or if it
    /// is not valid on its own.
    fn check_reload(&self, next: &Self) -> Result<(), SettingsError>;
}

/// The current value of reloadable settings, for the module that reads them.
#[derive(Debug, Clone)]
pub struct Live<T> {
    current: watch::Receiver<Arc<T>>,
}

impl<T> Live<T> {
    /// The settings in force now.
    pub fn get(&self) -> Arc<T> {
        self.current.borrow().clone()
    }

    /// Waits until they change; `false` once nobody can reload them any more.
    pub async fn changed(&mut self) -> bool {
        self.current.changed().await.is_ok()
    }
}

/// The writer of reloadable settings.
#[derive(Debug)]
pub struct Reload<T> {
    current: watch::Sender<Arc<T>>,
}

impl<T: Reloadable> Reload<T> {
    /// Puts `next` in force, unless [`Reloadable::check_reload`] refuses it.
    pub fn apply(&self, next: T) -> Result<(), SettingsError> {
        let current = self.current.borrow().clone();
        current.check_reload(&next)?;
        if *current != next {
            self.current.send_replace(Arc::new(next));
        }
        Ok(())
    }

    /// The settings in force now.
    pub fn get(&self) -> Arc<T> {
        self.current.borrow().clone()
    }

    /// Another reader of them.
    pub fn live(&self) -> Live<T> {
        Live {
            current: self.current.subscribe(),
        }
    }
}

/// Settings `initial`, live: the writer and a reader.
pub fn live<T: Reloadable>(initial: T) -> (Reload<T>, Live<T>) {
    let (sender, receiver) = watch::channel(Arc::new(initial));
    (Reload { current: sender }, Live { current: receiver })
}

/// Refuses a change of a setting only a restart applies: `unchanged!(old, new, "core.gateway",
/// max_sessions, outbound_queue)`.
#[macro_export]
macro_rules! unchanged {
    ($old:expr, $new:expr, $section:literal, $($field:ident),+ $(,)?) => {
        $(
            if $old.$field != $new.$field {
                return Err($crate::settings::SettingsError::new(concat!(
                    $section, ".", stringify!($field),
                    " changes only with a restart"
                )));
            }
        )+
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq)]
    struct Knobs {
        rate: u32,
        slots: u32,
    }

    impl Reloadable for Knobs {
        fn check_reload(&self, next: &Self) -> Result<(), SettingsError> {
            crate::unchanged!(self, next, "test", slots);
            if next.rate == 0 {
                return Err(SettingsError::new("test.rate must be at least 1"));
            }
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_reload_reaches_readers_unless_refused() {
        let (reload, mut live) = live(Knobs { rate: 5, slots: 2 });
        reload.apply(Knobs { rate: 9, slots: 2 }).unwrap();
        assert!(live.changed().await);
        assert_eq!(live.get().rate, 9);
        let fixed = reload.apply(Knobs { rate: 9, slots: 3 }).unwrap_err();
        assert!(fixed.to_string().contains("test.slots"), "{fixed}");
        assert!(reload.apply(Knobs { rate: 0, slots: 2 }).is_err());
        assert_eq!(
            *live.get(),
            Knobs { rate: 9, slots: 2 },
            "nothing refused is in force"
        );
    }
}
