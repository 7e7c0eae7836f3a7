#version 150
// Grass with a faint survey grid every u_step map milliseconds (anti-aliased by fwidth).
uniform vec3 u_ground;
uniform vec3 u_fog_color;
uniform float u_step;
in vec2 v_xy;
in float v_fog;
out vec4 o_color;

void main() {
    vec2 g = abs(fract(v_xy / u_step - 0.5) - 0.5) / max(fwidth(v_xy / u_step), vec2(1e-4));
    float line = 1.0 - clamp(min(g.x, g.y), 0.0, 1.0);
    vec3 rgb = u_ground * (1.0 + 0.18 * line);
    o_color = vec4(mix(rgb, u_fog_color, v_fog), 1.0);
}
