//! The Python readers a Django shop uses, each the way tests/python/matrix_reader.py calls it.

pub(super) struct Reader {
    /// The id matrix_reader.py prints.
    pub(super) id: &'static str,
    pub(super) header: &'static str,
    /// Covered by the default-settings promise.
    pub(super) promise: bool,
}

pub(super) const READERS: [Reader; 8] = [
    Reader {
        id: "pylibmc",
        header: "pylibmc",
        promise: true,
    },
    Reader {
        id: "pylibmc_binary",
        header: "pylibmc binary",
        promise: true,
    },
    Reader {
        id: "pymemcache",
        header: "pymemcache",
        promise: true,
    },
    Reader {
        id: "python_memcached",
        header: "python-memcached",
        promise: false,
    },
    Reader {
        id: "django_pylibmc",
        header: "Django PyLibMCCache",
        promise: true,
    },
    Reader {
        id: "django_pymemcache",
        header: "Django PyMemcacheCache",
        promise: true,
    },
    Reader {
        id: "django_memcached",
        header: "Django MemcachedCache",
        promise: false,
    },
    Reader {
        id: "django_newcache",
        header: "django-newcache",
        promise: false,
    },
];
