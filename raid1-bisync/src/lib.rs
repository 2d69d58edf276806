//! One source for a blocking and an async variant of the same I/O code (raid1-embedded's NOR
//! store over `embedded-storage` and over `embedded-storage-async`).
//!
//! The code is written async, in a file that its parent includes twice, as two modules (see
//! `raid1-embedded/src/nor.rs`): one imports the async traits and [`asynchronous`] under the
//! name used on the items, the other the blocking traits and [`blocking`]. [`blocking`]
//! removes every `async` and every `.await` from the item it is put on, so that module holds
//! the plain blocking functions, with no future, poll or executor; [`asynchronous`] leaves
//! the item as it is.
//!
//! Only tokens are rewritten: `async` before `fn`, a block or `move`, and `.await` after an
//! expression. An `async` block in blocking code becomes a plain block.

use proc_macro::{Delimiter, Group, TokenStream, TokenTree};

/// The blocking variant of the item: every `async` and `.await` removed.
#[proc_macro_attribute]
pub fn blocking(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(t) = attr.into_iter().next() {
        return error(t.span(), "`blocking` takes no arguments");
    }
    strip(item)
}

/// The async variant of the item: unchanged.
#[proc_macro_attribute]
pub fn asynchronous(attr: TokenStream, item: TokenStream) -> TokenStream {
    if let Some(t) = attr.into_iter().next() {
        return error(t.span(), "`asynchronous` takes no arguments");
    }
    item
}

fn strip(stream: TokenStream) -> TokenStream {
    let tokens: Vec<TokenTree> = stream.into_iter().collect();
    let mut out = Vec::with_capacity(tokens.len());
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            TokenTree::Ident(id) if id.to_string() == "async" => {
                i += 1;
                continue;
            }
            TokenTree::Punct(p) if p.as_char() == '.' => {
                if let Some(TokenTree::Ident(next)) = tokens.get(i + 1) {
                    if next.to_string() == "await" {
                        i += 2;
                        continue;
                    }
                }
                out.push(tokens[i].clone());
            }
            TokenTree::Group(g) => {
                let mut inner = Group::new(g.delimiter(), strip(g.stream()));
                inner.set_span(g.span());
                out.push(TokenTree::Group(inner));
            }
            t => out.push(t.clone()),
        }
        i += 1;
    }
    out.into_iter().collect()
}

fn error(span: proc_macro::Span, message: &str) -> TokenStream {
    // compile_error!("message") at `span`.
    let mut call: TokenStream = "compile_error!".parse().unwrap_or_default();
    let text: TokenStream = format!("{message:?}").parse().unwrap_or_default();
    let mut args = Group::new(Delimiter::Parenthesis, text);
    args.set_span(span);
    call.extend([TokenTree::Group(args)]);
    call.into_iter()
        .map(|mut t| {
            t.set_span(span);
            t
        })
        .collect()
}
