#version 150
// Flat faces: the normal is the cross product of the position's screen-space derivatives.
// Lambert light from the sun plus ambient; glowing instances add light of their own colour.
uniform vec3 u_sun;  // direction towards the sun, world space
in vec3 v_pos;
in vec4 v_color;
in float v_glow;
in float v_up;
out vec4 o_color;

void main() {
    vec3 n = normalize(cross(dFdx(v_pos), dFdy(v_pos)));
    float light = 0.35 + 0.65 * max(dot(n, normalize(u_sun)), 0.0);
    vec3 rgb = v_color.rgb * light;
    // Windows: lit bands up the walls, brighter as the glow rises.
    float band = step(0.5, fract(v_up * 6.0)) * step(abs(n.z), 0.5);
    rgb += v_color.rgb * v_glow * (0.6 + 0.4 * band);
    o_color = vec4(rgb, v_color.a);
}
