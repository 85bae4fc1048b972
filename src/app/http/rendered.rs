//! Listing bodies rendered once per registry generation: the canvas and the
//! MCP server list the registry on every page view and tool call, and the
//! answer only changes when the registry does, so a listing is served as
//! shared bytes rendered from the first request of its generation.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;

use bytes::Bytes;
use poem::IntoResponse;
use poem::http::header;
use poem_openapi::ApiResponse;
use poem_openapi::payload::{Json, Payload};
use poem_openapi::registry::{MetaResponses, MetaSchemaRef, Registry};
use poem_openapi::types::{ToJSON, Type};

/// Variants kept per generation (runtimes asked for, per route); past
/// this a body is rendered for its request alone, so no query string can
/// grow the cache.
const MAX_VARIANTS: usize = 64;

/// A JSON body already rendered; documented exactly as `Json<T>`.
pub struct RenderedJson<T> {
    body: Bytes,
    _type: PhantomData<fn() -> T>,
}

impl<T> RenderedJson<T> {
    fn new(body: Bytes) -> Self {
        Self {
            body,
            _type: PhantomData,
        }
    }
}

impl<T: Type> Payload for RenderedJson<T> {
    const CONTENT_TYPE: &'static str = <Json<T> as Payload>::CONTENT_TYPE;

    fn schema_ref() -> MetaSchemaRef {
        T::schema_ref()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for RenderedJson<T> {
    fn into_response(self) -> poem::Response {
        poem::Response::builder()
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(self.body)
    }
}

impl<T: ToJSON> ApiResponse for RenderedJson<T> {
    fn meta() -> MetaResponses {
        <Json<T> as ApiResponse>::meta()
    }

    fn register(registry: &mut Registry) {
        <Json<T> as ApiResponse>::register(registry);
    }
}

/// The bodies rendered from one generation, by variant.
#[derive(Default)]
pub struct RenderCache {
    bodies: Mutex<(u64, HashMap<String, Bytes>)>,
}

impl RenderCache {
    /// The body of `variant` for catalog `generation`, rendered by `render`
    /// when it is the first asked for.
    pub fn get_or_render<T: ToJSON>(
        &self,
        generation: u64,
        variant: &str,
        render: impl FnOnce() -> T,
    ) -> RenderedJson<T> {
        {
            let bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
            if bodies.0 == generation
                && let Some(body) = bodies.1.get(variant)
            {
                return RenderedJson::new(body.clone());
            }
        }
        // Rendered unlocked: two first requests may both render, and
        // either result is the same.
        let body = Bytes::from(serde_json::to_vec(&render().to_json()).unwrap_or_default());
        let mut bodies = self.bodies.lock().unwrap_or_else(|e| e.into_inner());
        if bodies.0 != generation {
            if generation < bodies.0 {
                // A request that read an older catalog: serve, don't keep.
                return RenderedJson::new(body);
            }
            *bodies = (generation, HashMap::new());
        }
        if bodies.1.len() < MAX_VARIANTS {
            bodies.1.insert(variant.to_owned(), body.clone());
        }
        RenderedJson::new(body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(body: RenderedJson<Vec<String>>) -> String {
        String::from_utf8(body.body.to_vec()).unwrap()
    }

    #[test]
    fn a_body_is_rendered_once_per_generation_and_variant() {
        let cache = RenderCache::default();
        let renders = std::cell::Cell::new(0);
        let render = |v: &str| {
            renders.set(renders.get() + 1);
            vec![v.to_owned()]
        };
        assert_eq!(
            text(cache.get_or_render(1, "a", || render("a1"))),
            r#"["a1"]"#
        );
        assert_eq!(
            text(cache.get_or_render(1, "a", || render("x"))),
            r#"["a1"]"#
        );
        assert_eq!(
            text(cache.get_or_render(1, "b", || render("b1"))),
            r#"["b1"]"#
        );
        assert_eq!(renders.get(), 2);
        // A new generation renders afresh; an older one is never kept.
        assert_eq!(
            text(cache.get_or_render(2, "a", || render("a2"))),
            r#"["a2"]"#
        );
        assert_eq!(
            text(cache.get_or_render(1, "a", || render("old"))),
            r#"["old"]"#
        );
        assert_eq!(
            text(cache.get_or_render(2, "a", || render("x"))),
            r#"["a2"]"#
        );
        assert_eq!(renders.get(), 4);
    }

    #[test]
    fn variants_past_the_cap_are_rendered_but_not_kept() {
        let cache = RenderCache::default();
        for i in 0..MAX_VARIANTS + 10 {
            cache.get_or_render(1, &i.to_string(), || vec![i.to_string()]);
        }
        let kept = cache.bodies.lock().unwrap().1.len();
        assert_eq!(kept, MAX_VARIANTS);
        let late = MAX_VARIANTS + 5;
        let body = cache.get_or_render(1, &late.to_string(), || vec!["again".to_owned()]);
        assert_eq!(text(body), r#"["again"]"#);
    }
}
