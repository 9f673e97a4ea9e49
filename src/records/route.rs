//! Every route the service has, as a [`Route`]: which one a path is, and its template (the
//! label it is counted and logged under). The route table, which handler serves each (route,
//! method), is in `routes`; the metrics count requests in the slot `route as usize`.

closed_enum! {
    /// A request's route, by template: the label requests are counted under (never the raw
    /// path, whose values are unbounded). `/metrics` counts `Route::ALL[i]` in slot `i`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Route {
        UserById,
        User,
        Users,
        Livez,
        Readyz,
        Metrics,
        OpenApi,
        Docs,
        Redoc,
        Index,
        Static,
        /// Any other path.
        Unmatched,
    }
}

impl Route {
    /// The route serving `path` (without the query).
    pub fn of(path: &str) -> Route {
        if path.starts_with("/user/") {
            return Route::UserById;
        }
        match path {
            "/user" => Route::User,
            "/users" => Route::Users,
            "/livez" => Route::Livez,
            "/readyz" => Route::Readyz,
            "/metrics" => Route::Metrics,
            "/openapi.json" => Route::OpenApi,
            "/docs" => Route::Docs,
            "/redoc" => Route::Redoc,
            "/" => Route::Index,
            p if p.starts_with("/static/") => Route::Static,
            _ => Route::Unmatched,
        }
    }

    pub fn template(self) -> &'static str {
        match self {
            Route::UserById => "/user/{id}",
            Route::User => "/user",
            Route::Users => "/users",
            Route::Livez => "/livez",
            Route::Readyz => "/readyz",
            Route::Metrics => "/metrics",
            Route::OpenApi => "/openapi.json",
            Route::Docs => "/docs",
            Route::Redoc => "/redoc",
            Route::Index => "/",
            Route::Static => "/static/{path}",
            Route::Unmatched => "unmatched",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_templates_never_raw_paths() {
        assert_eq!(Route::of("/user/12345").template(), "/user/{id}");
        assert_eq!(Route::of("/user/").template(), "/user/{id}");
        assert_eq!(Route::of("/user").template(), "/user");
        assert_eq!(Route::of("/static/app.js").template(), "/static/{path}");
        assert_eq!(Route::of("/nope/42").template(), "unmatched");
        assert_eq!(Route::of("/users/").template(), "unmatched");
    }

    /// Every route is reached by its own template's path (the two with a parameter, by one
    /// filled in), so none is declared and never served.
    #[test]
    fn each_route_is_the_route_of_its_template() {
        for route in Route::ALL {
            let path = match route {
                Route::UserById => "/user/1",
                Route::Static => "/static/app.js",
                Route::Unmatched => "/nope",
                r => r.template(),
            };
            assert_eq!(Route::of(path), route, "{path}");
        }
    }
}
