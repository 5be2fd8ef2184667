//! Typed access to the service (load-balancing) maps: frontends, their
//! slots and Maglev tables by generation, backends, reverse NAT and
//! affinity. The order of writes that makes a change atomic per frontend
//! is the control plane's (`pilus_controlplane::services`); this only
//! writes what it is told.

use crate::{loader::Datapath, maps::ignore_missing, Error};
use aya::maps::{HashMap, MapData};
use pilus_abi::{
    Lb4Affinity, Lb4AffinityKey, Lb4Backend, Lb4Key, Lb4Maglev, Lb4MaglevKey, Lb4ReverseNat,
    Lb4Service, Lb4SlotKey,
};

/// Map names, as bpf/lib/maps.h declares them.
pub const SERVICES: &str = "pilus_lb4_svc";
pub const SLOTS: &str = "pilus_lb4_slot";
pub const BACKENDS: &str = "pilus_lb4_be";
pub const MAGLEV: &str = "pilus_lb4_mag";
pub const REV_NAT: &str = "pilus_lb4_rnat";
pub const AFFINITY: &str = "pilus_lb4_aff";

macro_rules! hash {
    ($self:ident, $name:expr) => {
        HashMap::try_from(
            $self
                .ebpf
                .map_mut($name)
                .ok_or(Error::MissingMap { name: $name })?,
        )
        .map_err(|e| Error::map($name, e))?
    };
    (ro $self:ident, $name:expr) => {
        HashMap::try_from(
            $self
                .ebpf
                .map($name)
                .ok_or(Error::MissingMap { name: $name })?,
        )
        .map_err(|e| Error::map($name, e))?
    };
}

/// Inserts every pair into hash map `name`.
fn put_all<K: aya::Pod, V: aya::Pod>(
    m: &mut HashMap<&mut MapData, K, V>,
    name: &'static str,
    entries: &[(K, V)],
) -> Result<(), Error> {
    for (k, v) in entries {
        m.insert(k, v, 0).map_err(|e| Error::map(name, e))?;
    }
    Ok(())
}

fn remove_all<K: aya::Pod, V: aya::Pod>(
    m: &mut HashMap<&mut MapData, K, V>,
    name: &'static str,
    keys: &[K],
) -> Result<(), Error> {
    for k in keys {
        ignore_missing(m.remove(k), name)?;
    }
    Ok(())
}

fn dump<K: aya::Pod, V: aya::Pod>(
    m: &HashMap<&MapData, K, V>,
    name: &'static str,
) -> Result<Vec<(K, V)>, Error> {
    m.iter()
        .map(|r| r.map_err(|e| Error::map(name, e)))
        .collect()
}

impl Datapath {
    /// Writes a whole random frontend at once, in the order that keeps it
    /// consistent (backends, slots of `svc.generation`, reverse NAT, the
    /// entry): one slot per backend, `count` set to match. For tests and
    /// benchmarks; the control plane does its own changes step by step.
    pub fn put_lb_frontend(
        &mut self,
        key: &Lb4Key,
        mut svc: Lb4Service,
        backends: &[(u32, Lb4Backend)],
    ) -> Result<(), Error> {
        self.put_lb_backends(backends)?;
        let slots: Vec<(Lb4SlotKey, u32)> = backends
            .iter()
            .enumerate()
            .map(|(i, (id, _))| {
                (
                    Lb4SlotKey {
                        id: svc.id,
                        generation: svc.generation,
                        slot: i as u32,
                    },
                    *id,
                )
            })
            .collect();
        self.put_lb_slots(&slots)?;
        self.put_lb_rev_nat(&[(
            svc.id,
            Lb4ReverseNat {
                address: key.address,
                port: key.dport,
                _pad: 0,
            },
        )])?;
        svc.count = backends.len() as u32;
        self.put_lb_services(&[(*key, svc)])
    }

    pub fn put_lb_services(&mut self, entries: &[(Lb4Key, Lb4Service)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4Key, Lb4Service> = hash!(self, SERVICES);
        put_all(&mut m, SERVICES, entries)
    }

    pub fn remove_lb_services(&mut self, keys: &[Lb4Key]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4Key, Lb4Service> = hash!(self, SERVICES);
        remove_all(&mut m, SERVICES, keys)
    }

    pub fn lb_services(&self) -> Result<Vec<(Lb4Key, Lb4Service)>, Error> {
        let m: HashMap<&MapData, Lb4Key, Lb4Service> = hash!(ro self, SERVICES);
        dump(&m, SERVICES)
    }

    pub fn put_lb_slots(&mut self, entries: &[(Lb4SlotKey, u32)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4SlotKey, u32> = hash!(self, SLOTS);
        put_all(&mut m, SLOTS, entries)
    }

    pub fn remove_lb_slots(&mut self, keys: &[Lb4SlotKey]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4SlotKey, u32> = hash!(self, SLOTS);
        remove_all(&mut m, SLOTS, keys)
    }

    pub fn lb_slots(&self) -> Result<Vec<(Lb4SlotKey, u32)>, Error> {
        let m: HashMap<&MapData, Lb4SlotKey, u32> = hash!(ro self, SLOTS);
        dump(&m, SLOTS)
    }

    pub fn put_lb_backends(&mut self, entries: &[(u32, Lb4Backend)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, u32, Lb4Backend> = hash!(self, BACKENDS);
        put_all(&mut m, BACKENDS, entries)
    }

    pub fn remove_lb_backends(&mut self, ids: &[u32]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, u32, Lb4Backend> = hash!(self, BACKENDS);
        remove_all(&mut m, BACKENDS, ids)
    }

    pub fn lb_backends(&self) -> Result<Vec<(u32, Lb4Backend)>, Error> {
        let m: HashMap<&MapData, u32, Lb4Backend> = hash!(ro self, BACKENDS);
        dump(&m, BACKENDS)
    }

    pub fn put_lb_maglev(&mut self, key: &Lb4MaglevKey, table: &Lb4Maglev) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4MaglevKey, Lb4Maglev> = hash!(self, MAGLEV);
        m.insert(key, table, 0).map_err(|e| Error::map(MAGLEV, e))
    }

    pub fn remove_lb_maglev(&mut self, key: &Lb4MaglevKey) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4MaglevKey, Lb4Maglev> = hash!(self, MAGLEV);
        ignore_missing(m.remove(key), MAGLEV)
    }

    /// The tables' keys (each table is 64 KiB: read one with [`Self::lb_maglev`]).
    pub fn lb_maglev_keys(&self) -> Result<Vec<Lb4MaglevKey>, Error> {
        let m: HashMap<&MapData, Lb4MaglevKey, Lb4Maglev> = hash!(ro self, MAGLEV);
        m.keys()
            .map(|r| r.map_err(|e| Error::map(MAGLEV, e)))
            .collect()
    }

    pub fn lb_maglev(&self, key: &Lb4MaglevKey) -> Result<Option<Box<Lb4Maglev>>, Error> {
        let m: HashMap<&MapData, Lb4MaglevKey, Lb4Maglev> = hash!(ro self, MAGLEV);
        match m.get(key, 0) {
            Ok(v) => Ok(Some(Box::new(v))),
            Err(aya::maps::MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(Error::map(MAGLEV, e)),
        }
    }

    pub fn put_lb_rev_nat(&mut self, entries: &[(u32, Lb4ReverseNat)]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, u32, Lb4ReverseNat> = hash!(self, REV_NAT);
        put_all(&mut m, REV_NAT, entries)
    }

    pub fn remove_lb_rev_nat(&mut self, ids: &[u32]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, u32, Lb4ReverseNat> = hash!(self, REV_NAT);
        remove_all(&mut m, REV_NAT, ids)
    }

    pub fn lb_rev_nat(&self) -> Result<Vec<(u32, Lb4ReverseNat)>, Error> {
        let m: HashMap<&MapData, u32, Lb4ReverseNat> = hash!(ro self, REV_NAT);
        dump(&m, REV_NAT)
    }

    pub fn put_lb_affinity(
        &mut self,
        entries: &[(Lb4AffinityKey, Lb4Affinity)],
    ) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4AffinityKey, Lb4Affinity> = hash!(self, AFFINITY);
        put_all(&mut m, AFFINITY, entries)
    }

    pub fn remove_lb_affinity(&mut self, keys: &[Lb4AffinityKey]) -> Result<(), Error> {
        let mut m: HashMap<&mut MapData, Lb4AffinityKey, Lb4Affinity> = hash!(self, AFFINITY);
        remove_all(&mut m, AFFINITY, keys)
    }

    pub fn lb_affinity(&self) -> Result<Vec<(Lb4AffinityKey, Lb4Affinity)>, Error> {
        let m: HashMap<&MapData, Lb4AffinityKey, Lb4Affinity> = hash!(ro self, AFFINITY);
        dump(&m, AFFINITY)
    }
}
